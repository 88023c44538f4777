// Package reconcile matches what a returning stick's ledger says (which
// setup.bin record went to which machine, internal/ledger) with what the
// kiosk store knows (entries, machines, the hello log) and reports what
// does not add up (DESIGN.md §1 step 2, issue 10 "Reconciliation").
//
// Import reads one ledger — from a file, a stick image, a mounted stick or
// a web upload — records each attributed record as consumed by the machine
// the agent saw (allocated → consumed, with its DMI, MAC and TPM identity),
// keeps the ledger's records, marks the stick's ledger import time and
// returns what it found. A damaged ledger (torn or bad lines, wrong
// checksums, another pool's stick) is counted and reported, never fatal:
// only its valid lines are used, and nothing is written for a stick this
// pool does not have. Importing the same ledger again changes nothing.
//
// Discrepancies lists what needs a person, from the store as it stands:
// records consumed whose machine never said hello within the hello window
// (about 6 hours, specs/amt-psk.md §2), hellos whose PID no imported ledger
// names (the stick is not back yet), one PID from two machines (a copied
// stick), a stick counter that went backwards, entries still allocated to
// a stick declared lost, ledgers of another pool's sticks.
package reconcile

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/provstick/provstick/internal/ledger"
	"github.com/provstick/provstick/kiosk/store"
	"github.com/provstick/provstick/setupbin"
)

// Kind names a discrepancy. Values are stable (the web console and tests
// branch on them).
type Kind string

// The kinds.
const (
	// KindNoHello: a record was consumed (the ledger says so) and the
	// machine has not said hello within the hello window.
	KindNoHello Kind = "consumed-no-hello"
	// KindNotInLedger: a machine said hello with a PID that no imported
	// ledger names (its stick has not come back, or its ledger lost the line).
	KindNotInLedger Kind = "hello-not-in-ledger"
	// KindUnknownPID: a hello with a PID this pool never issued.
	KindUnknownPID Kind = "hello-unknown-pid"
	// KindCopiedStick: one PID used by two machines (hellos or ledgers) —
	// a copied stick, or a restored setup.bin. An alarm.
	KindCopiedStick Kind = "pid-two-machines"
	// KindLedgerConflict: two different ledgers for one stick (the same
	// line numbers, different contents): the stick was copied.
	KindLedgerConflict Kind = "ledger-conflict"
	// KindCounterBackwards: setup.bin's consumed counter went down.
	KindCounterBackwards Kind = "counter-backwards"
	// KindLostStick: entries still allocated to a stick declared lost.
	KindLostStick Kind = "lost-stick"
	// KindForeignStick: the ledger of a stick this pool does not have.
	KindForeignStick Kind = "foreign-stick"
	// KindPKIStick: the ledger of a PKI stick (no PID/PPS, not from the
	// pool); its machines are recorded. Information, not kept.
	KindPKIStick Kind = "pki-stick"
	// KindKioskUnreachable: the agent's kiosk reachability check at the
	// PC (recipe check_kiosk) failed, and the machine's PID has not said
	// hello: what the check found is why, most likely.
	KindKioskUnreachable Kind = "kiosk-unreachable-at-pc"
	// KindMalformed: lines of a ledger that were damaged or unreadable.
	KindMalformed Kind = "malformed-ledger"
	// KindRecordMismatch: the ledger's record does not match the stick
	// (another PID at that record, a record number the stick does not have).
	KindRecordMismatch Kind = "record-mismatch"
	// KindNoUUID: a record consumed by a machine whose AMT UUID the agent
	// could not read; it is linked when the machine says hello.
	KindNoUUID Kind = "consumed-no-uuid"
	// KindUnbooted: records the BIOS consumed on machines that never
	// booted the stick (ledger case multiple-consumed).
	KindUnbooted Kind = "consumed-not-booted"
	// KindVoidConsumed: the ledger attributes a voided entry to a machine.
	KindVoidConsumed Kind = "void-entry-consumed"
)

// Severity says how urgent a discrepancy is.
type Severity string

// Severities.
const (
	SeverityInfo    Severity = "info"
	SeverityWarning Severity = "warning"
	SeverityAlarm   Severity = "alarm"
)

// Discrepancy is one thing that does not add up, with what to do.
type Discrepancy struct {
	Kind     Kind      `json:"kind"`
	Severity Severity  `json:"severity"`
	Subject  string    `json:"subject"` // "stick line3-0042", "PID 0000-037M", ...
	Detail   string    `json:"detail"`
	Advice   string    `json:"advice"`
	At       time.Time `json:"at,omitzero"`  // when it was found or happened
	ID       int64     `json:"id,omitempty"` // kept discrepancies: store id
}

// HelloWindow is how long AMT keeps saying hello after it took a record
// (specs/amt-psk.md §2: 5 × 1 min, 5 × 10 min, 5 × 1 h).
const HelloWindow = 6 * time.Hour

// DefaultMaxSize bounds a ledger read (a stick writes one short line per
// boot; 64 MiB is far beyond any real one).
const DefaultMaxSize = 64 << 20

// Options configure Import.
type Options struct {
	Logger *slog.Logger // nil discards
	// Now gives the time (tests); nil → time.Now.
	Now func() time.Time
	// MaxSize bounds the bytes read; 0 → DefaultMaxSize. A longer ledger
	// is reported as malformed and not imported.
	MaxSize int64
}

// Report is what one import did and found.
type Report struct {
	Source   string           `json:"source"`
	Stick    string           `json:"stick"` // label the ledger names ("" none; several joined by ",")
	Known    bool             `json:"known"` // this pool has the stick
	Digest   string           `json:"digest"`
	Lines    int              `json:"lines"`
	Records  int              `json:"records"` // valid records
	Damaged  int              `json:"damaged"` // lines skipped
	TornTail bool             `json:"torn_tail"`
	Findings []ledger.Finding `json:"findings"`
	// NewRecords: records not seen by an earlier import; Consumed: entries
	// this import moved to consumed; Matched: entries already linked to the
	// machine the ledger names.
	NewRecords int `json:"new_records"`
	Consumed   int `json:"consumed"`
	Matched    int `json:"matched"`
	// Repeat: the same bytes were imported before.
	Repeat bool `json:"repeat"`
	// QRTexts counts the lines that were QR texts of ledger lines (scanned
	// from the technician's screen, ledger.ExpandQR) and were decoded;
	// QRBad those that did not decode (also counted in Damaged).
	QRTexts       int           `json:"qr_texts,omitempty"`
	QRBad         int           `json:"qr_bad,omitempty"`
	Discrepancies []Discrepancy `json:"discrepancies"`
}

// Alarms counts the report's alarm-level discrepancies.
func (r *Report) Alarms() int {
	n := 0
	for _, d := range r.Discrepancies {
		if d.Severity == SeverityAlarm {
			n++
		}
	}
	return n
}

// ErrTooLarge: the ledger is longer than Options.MaxSize.
var ErrTooLarge = errors.New("reconcile: ledger too large")

// Import reads the ledger r (named name in the report) and reconciles it
// with the store. Only store and I/O failures are errors; everything wrong
// with the ledger is in the report.
func Import(ctx context.Context, st *store.Store, name string, r io.Reader, opts Options) (*Report, error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	nowf := opts.Now
	if nowf == nil {
		nowf = time.Now
	}
	limit := opts.MaxSize
	if limit <= 0 {
		limit = DefaultMaxSize
	}
	now := nowf()
	rep := &Report{Source: name, Findings: []ledger.Finding{}, Discrepancies: []Discrepancy{}}
	data, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return nil, fmt.Errorf("reading ledger %s: %w", name, err)
	}
	sum := sha256.Sum256(data)
	rep.Digest = "sha256:" + hex.EncodeToString(sum[:])
	im := &importer{st: st, log: log, now: now, rep: rep}
	if int64(len(data)) > limit {
		im.add(ctx, Discrepancy{Kind: KindMalformed, Severity: SeverityWarning, Subject: "ledger " + name,
			Detail: fmt.Sprintf("more than %d bytes (%s): %v; not imported", limit, rep.Digest, ErrTooLarge),
			Advice: "check that the file is a stick's provstick/ledger.jsonl"}, false)
		return rep, im.err
	}
	// A file of scanned QR texts (or a ledger with some among its lines)
	// becomes the ledger lines they hold, verified below like any other.
	data, rep.QRTexts, rep.QRBad = ledger.ExpandQR(data, int(min(2*limit, 1<<30)))
	l, err := ledger.Read(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("reading ledger %s: %w", name, err)
	}
	rep.Lines, rep.Records, rep.TornTail = l.Lines, len(l.Records), l.TornTail
	rep.Findings = append(rep.Findings, l.Findings...)
	for _, f := range l.Findings {
		if f.Code != ledger.CodeSeqOrder {
			rep.Damaged++
		}
	}
	prev, err := st.LedgerImports(ctx, "", 0)
	if err != nil {
		return nil, err
	}
	for _, p := range prev {
		if p.Digest == rep.Digest {
			rep.Repeat = true
			break
		}
	}
	// Group the records by the stick they name (normally one).
	var labels []string
	by := map[string][]*ledger.Record{}
	for _, rec := range l.Records {
		if _, ok := by[rec.Stick]; !ok {
			labels = append(labels, rec.Stick)
		}
		by[rec.Stick] = append(by[rec.Stick], rec)
	}
	rep.Stick = strings.Join(labels, ",")
	subject := "ledger " + name
	if len(labels) == 1 && labels[0] != "" {
		subject = "stick " + labels[0]
	}
	if len(labels) > 1 {
		im.add(ctx, Discrepancy{Kind: KindMalformed, Severity: SeverityWarning, Subject: subject,
			Detail: fmt.Sprintf("the records name %d sticks: %s", len(labels), strings.Join(labels, ", ")),
			Advice: "a ledger belongs to one stick: check whether files were merged"}, true)
	}
	if rep.Damaged > 0 {
		var lines []string
		for _, f := range l.Findings {
			if f.Code != ledger.CodeSeqOrder {
				lines = append(lines, fmt.Sprintf("line %d %s", f.Line, f.Code))
			}
		}
		sev := SeverityWarning
		advice := "the valid lines were imported; re-read the stick if it is still at hand"
		if rep.Damaged == 1 && l.TornTail {
			sev, advice = SeverityInfo, "a power cut during the last write leaves this; the line's machine is linked when it says hello"
		}
		im.add(ctx, Discrepancy{Kind: KindMalformed, Severity: sev, Subject: subject,
			Detail: fmt.Sprintf("%d of %d lines skipped (%s), ledger %s", rep.Damaged, l.Lines, shortList(lines, 10), rep.Digest),
			Advice: advice}, len(l.Records) > 0)
	}
	imp := store.LedgerImport{At: now, Source: name, Stick: rep.Stick, Digest: rep.Digest, Lines: l.Lines,
		Records: len(l.Records), Damaged: rep.Damaged, TornTail: l.TornTail, MaxConsumed: -1}
	for _, rec := range l.Records {
		imp.MaxSeq = max(imp.MaxSeq, rec.Seq)
		imp.MaxConsumed = max(imp.MaxConsumed, int64(rec.Consumed))
	}
	var keep []store.LedgerRecord
	for _, label := range labels {
		recs, known, err := im.stick(ctx, label, by[label])
		if err != nil {
			return nil, err
		}
		if known && len(labels) == 1 {
			rep.Known, imp.Known = true, true
		}
		keep = append(keep, recs...)
	}
	if im.err != nil {
		return nil, im.err
	}
	_, added, err := st.SaveLedgerImport(ctx, imp, keep)
	if err != nil {
		return nil, err
	}
	rep.NewRecords = added
	im.audit = append(im.audit, store.AuditRecord{At: now, Action: "ledger.import", Outcome: fmt.Sprintf("%d discrepancies", len(rep.Discrepancies)),
		Detail: fmt.Sprintf("%s: stick %q, %d records (%d new), %d consumed, %d damaged lines, %s", name, rep.Stick, rep.Records, added, rep.Consumed, rep.Damaged, rep.Digest)})
	if err := st.Audit(ctx, im.audit...); err != nil {
		return nil, err
	}
	log.Info("ledger imported", "source", name, "stick", rep.Stick, "records", rep.Records, "new", added,
		"consumed", rep.Consumed, "matched", rep.Matched, "damaged", rep.Damaged, "discrepancies", len(rep.Discrepancies))
	return rep, nil
}

type importer struct {
	st    *store.Store
	log   *slog.Logger
	now   time.Time
	rep   *Report
	err   error
	audit []store.AuditRecord
	// helloPIDs: the PIDs (canonical) that said hello, read once.
	helloPIDs map[string]bool
}

// add puts d in the report and, when keep, in the store's kept
// discrepancies (deduplicated there).
func (im *importer) add(ctx context.Context, d Discrepancy, keep bool) {
	if d.At.IsZero() {
		d.At = im.now
	}
	im.rep.Discrepancies = append(im.rep.Discrepancies, d)
	if d.Severity == SeverityAlarm {
		im.log.Warn("reconciliation alarm", "kind", string(d.Kind), "subject", d.Subject, "detail", d.Detail)
	}
	if !keep || im.err != nil {
		return
	}
	if _, err := im.st.AddDiscrepancy(ctx, store.StoredDiscrepancy{Kind: string(d.Kind), Severity: string(d.Severity),
		Subject: d.Subject, Detail: d.Detail, Advice: d.Advice, At: d.At}); err != nil {
		im.err = err
	}
}

// stick reconciles the records naming one stick and returns those to keep.
func (im *importer) stick(ctx context.Context, label string, recs []*ledger.Record) ([]store.LedgerRecord, bool, error) {
	subject := "stick " + label
	if label == "" {
		im.add(ctx, Discrepancy{Kind: KindMalformed, Severity: SeverityWarning, Subject: "ledger " + im.rep.Source,
			Detail: fmt.Sprintf("%d records name no stick", len(recs)), Advice: "check that the file is a stick's provstick/ledger.jsonl"}, true)
		return nil, false, nil
	}
	entries, err := im.st.StickEntries(ctx, label)
	if errors.Is(err, store.ErrNotFound) && pkiStick(recs) {
		return nil, false, im.pkiStick(ctx, label, recs)
	}
	if errors.Is(err, store.ErrNotFound) {
		im.add(ctx, Discrepancy{Kind: KindForeignStick, Severity: SeverityWarning, Subject: subject,
			Detail: fmt.Sprintf("this pool has no stick %q (%d records, ledger %s): another pool's stick", label, len(recs), im.rep.Digest),
			Advice: "import the ledger at the kiosk whose pool built the stick; nothing was recorded here"}, true)
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	byRecord := make(map[int]store.EntryInfo, len(entries))
	for _, e := range entries {
		byRecord[e.Record] = e
	}
	kept, err := im.st.LedgerRecords(ctx, label)
	if err != nil {
		return nil, true, err
	}
	sums := map[uint64][]string{}
	for _, k := range kept {
		sums[k.Seq] = append(sums[k.Seq], k.Sum)
	}
	// The counter against what earlier imports of this stick saw: a line
	// must not show a lower counter than any earlier line (by seq). A torn
	// or older copy only lacks lines, which is no discrepancy.
	slices.SortFunc(kept, func(a, b store.LedgerRecord) int { return cmp.Compare(a.Seq, b.Seq) })
	prefixMax := make([]int64, len(kept))
	for i, k := range kept {
		prefixMax[i] = k.Consumed
		if i > 0 {
			prefixMax[i] = max(prefixMax[i], prefixMax[i-1])
		}
	}
	keptBefore := func(seq uint64) (int64, bool) {
		i, _ := slices.BinarySearchFunc(kept, seq, func(k store.LedgerRecord, s uint64) int { return cmp.Compare(k.Seq, s) })
		if i == 0 {
			return 0, false
		}
		return prefixMax[i-1], true
	}
	var last *ledger.Record
	out := make([]store.LedgerRecord, 0, len(recs))
	for _, rec := range recs {
		// A QR line (ledger.ForQR) stands for the full line whose sum it
		// names: both are one line to the store.
		sum := rec.Sum
		if rec.FullSum != "" {
			sum = rec.FullSum
		}
		if s := sums[rec.Seq]; len(s) > 0 && !slices.ContainsFunc(s, func(k string) bool { return ledger.SameLine(k, sum) }) {
			im.add(ctx, Discrepancy{Kind: KindLedgerConflict, Severity: SeverityAlarm, Subject: subject,
				Detail: fmt.Sprintf("line seq %d differs from the one imported before: two different ledgers for one stick", rec.Seq),
				Advice: "the stick was copied: find the copies and void the stick's remaining entries"}, true)
		}
		if was, ok := keptBefore(rec.Seq); ok && int64(rec.Consumed) < was && rec.Case != ledger.CaseRollback {
			im.add(ctx, Discrepancy{Kind: KindCounterBackwards, Severity: SeverityAlarm, Subject: subject,
				Detail: fmt.Sprintf("seq %d: setup.bin's consumed counter is %d, an earlier import saw %d", rec.Seq, rec.Consumed, was),
				Advice: "an older image of the stick was written back (or the stick copied): records may be handed out twice; void the stick's remaining entries"}, true)
		}
		if rec.Case == ledger.CaseRollback || (last != nil && rec.Consumed < last.Consumed) {
			from := "?"
			if rec.PrevConsumed != nil {
				from = fmt.Sprint(*rec.PrevConsumed)
			} else if last != nil {
				from = fmt.Sprint(last.Consumed)
			}
			im.add(ctx, Discrepancy{Kind: KindCounterBackwards, Severity: SeverityAlarm, Subject: subject,
				Detail: fmt.Sprintf("seq %d: setup.bin's consumed counter went from %s back to %d", rec.Seq, from, rec.Consumed),
				Advice: "an older setup.bin was written back (or the stick copied): records may be handed out twice; void the stick's remaining entries"}, true)
		}
		last = rec
		lr := store.LedgerRecord{Stick: label, Seq: rec.Seq, Sum: sum, Case: string(rec.Case), Record: rec.Record,
			Consumed: int64(rec.Consumed), At: rec.Time}
		if rec.AMT != nil {
			lr.UUID = strings.ToLower(strings.TrimSpace(rec.AMT.UUID))
		}
		var pid setupbin.PID
		if rec.PID != "" {
			p, err := setupbin.ParsePID(rec.PID)
			if err != nil {
				im.add(ctx, Discrepancy{Kind: KindRecordMismatch, Severity: SeverityWarning, Subject: subject,
					Detail: fmt.Sprintf("seq %d: PID %q is not a valid PID", rec.Seq, rec.PID), Advice: "the line is ignored"}, true)
				continue
			}
			pid, lr.PID = p, p.String()
		}
		if rec.Record > 0 {
			if err := im.record(ctx, subject, rec, pid, &lr, byRecord); err != nil {
				return nil, true, err
			}
		}
		for _, n := range rec.Skipped {
			e, ok := byRecord[n]
			if !ok || e.State != store.StateAllocated {
				continue
			}
			im.add(ctx, Discrepancy{Kind: KindUnbooted, Severity: SeverityInfo, Subject: "PID " + pidDisplay(e.PID),
				Detail: fmt.Sprintf("%s record %d was taken by a machine that did not boot the stick (seen at seq %d)", subject, n, rec.Seq),
				Advice: "the machine is linked when it says hello; if it never does, find it and power it on with the network connected"}, true)
		}
		if err := im.kioskCheck(ctx, subject, rec, lr); err != nil {
			return nil, true, err
		}
		out = append(out, lr)
	}
	return out, true, nil
}

// kioskCheck reports a failed kiosk reachability check of the agent's
// (ledger kiosk_check) when the machine's PID has not said hello. A check
// that could not run (no driver for the NIC, or an error of its own) says
// nothing about AMT's path, which has its own NIC firmware: information.
func (im *importer) kioskCheck(ctx context.Context, subject string, rec *ledger.Record, lr store.LedgerRecord) error {
	k := rec.KioskCheck
	if k == nil || k.Result == ledger.KioskReachable {
		return nil
	}
	if im.helloPIDs == nil {
		hs, err := im.st.HelloSummaries(ctx)
		if err != nil {
			return err
		}
		im.helloPIDs = map[string]bool{}
		for _, h := range hs {
			if p, err := setupbin.ParsePID(h.PID); err == nil {
				im.helloPIDs[p.String()] = true
			}
		}
	}
	if lr.PID != "" && im.helloPIDs[lr.PID] {
		return nil
	}
	who := subject
	if lr.PID != "" {
		who = "PID " + pidDisplay(lr.PID)
	}
	where := k.Via()
	if k.Kiosk != "" {
		where += " → " + k.Kiosk
	}
	detail := fmt.Sprintf("%s seq %d (record %d, machine %s): the agent's check at the PC: %s", subject, rec.Seq, rec.Record, orDash(lr.UUID), k.Result)
	if where != "" {
		detail += ", " + where
	}
	if k.Error != "" {
		detail += ": " + k.Error
	}
	d := Discrepancy{Kind: KindKioskUnreachable, Severity: SeverityWarning, Subject: who, Detail: detail,
		Advice: "the machine cannot find the kiosk the way the check did: fix what it names (cabling, the kiosk's DHCP or DNS, the hello port), then power the machine on again"}
	if k.Result == ledger.KioskNoNIC || k.Result == ledger.KioskError {
		d.Severity = SeverityInfo
		d.Advice = "the check could not run on this machine (AMT's own network path was not tested); for no-nic add the NIC's driver to the recipe's check_kiosk.modules"
	}
	im.add(ctx, d, true)
	return nil
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// record links one attributed record to its machine.
func (im *importer) record(ctx context.Context, subject string, rec *ledger.Record, pid setupbin.PID, lr *store.LedgerRecord, byRecord map[int]store.EntryInfo) error {
	e, ok := byRecord[rec.Record]
	if !ok {
		im.add(ctx, Discrepancy{Kind: KindRecordMismatch, Severity: SeverityWarning, Subject: subject,
			Detail: fmt.Sprintf("seq %d names record %d; the stick has %d records", rec.Seq, rec.Record, len(byRecord)),
			Advice: "the setup.bin on the stick is not the one built for it: rebuild the stick"}, true)
		return nil
	}
	if !pid.IsZero() && pid.String() != e.PID {
		im.add(ctx, Discrepancy{Kind: KindRecordMismatch, Severity: SeverityAlarm, Subject: subject,
			Detail: fmt.Sprintf("seq %d: record %d holds PID %s on the stick, the pool allocated %s", rec.Seq, rec.Record, pid.Display(), pidDisplay(e.PID)),
			Advice: "the setup.bin on the stick is not the one built for it: void both entries and rebuild the stick"}, true)
		return nil
	}
	lr.PID = e.PID
	if lr.UUID == "" {
		im.add(ctx, Discrepancy{Kind: KindNoUUID, Severity: SeverityInfo, Subject: "PID " + pidDisplay(e.PID),
			Detail: fmt.Sprintf("%s record %d consumed (seq %d), the agent could not read the machine's AMT UUID", subject, rec.Record, rec.Seq),
			Advice: "the machine is linked when it says hello"}, true)
		return nil
	}
	m := machineOf(rec)
	switch e.State {
	case store.StateAllocated:
		p, _ := setupbin.ParsePID(e.PID)
		reason := fmt.Sprintf("consumed: ledger of stick %s, seq %d, record %d", rec.Stick, rec.Seq, rec.Record)
		err := im.st.Consume(ctx, p, m, reason)
		if errors.Is(err, store.ErrInvalid) {
			im.add(ctx, Discrepancy{Kind: KindRecordMismatch, Severity: SeverityWarning, Subject: "PID " + pidDisplay(e.PID),
				Detail: fmt.Sprintf("%s seq %d: %v", subject, rec.Seq, err), Advice: "the machine is linked when it says hello"}, true)
			return nil
		}
		if err != nil && !errors.Is(err, store.ErrIllegalTransition) {
			return err
		}
		if err == nil {
			im.rep.Consumed++
			im.audit = append(im.audit, store.AuditRecord{At: im.now, Action: "ledger.consume", PID: e.PID, UUID: lr.UUID, Outcome: "ok", Detail: reason})
		}
	case store.StateVoid:
		im.add(ctx, Discrepancy{Kind: KindVoidConsumed, Severity: SeverityWarning, Subject: "PID " + pidDisplay(e.PID),
			Detail: fmt.Sprintf("%s record %d was voided (%s) but machine %s consumed it (seq %d)", subject, rec.Record, e.Reason, lr.UUID, rec.Seq),
			Advice: "the machine holds a PID/PPS the kiosk will refuse: unprovision it in the MEBx and give it a record from another stick"}, true)
	case store.StateFree:
		// Not possible for an entry on a stick; nothing to link.
	default:
		if e.Machine != "" && e.Machine != lr.UUID {
			im.add(ctx, Discrepancy{Kind: KindCopiedStick, Severity: SeverityAlarm, Subject: "PID " + pidDisplay(e.PID),
				Detail: fmt.Sprintf("%s record %d: the ledger names machine %s, the kiosk linked machine %s (by hello or an earlier ledger)", subject, rec.Record, lr.UUID, e.Machine),
				Advice: "one PID on two machines: a copied stick or a restored setup.bin; find both machines, void the entry and re-provision them"}, true)
			return nil
		}
		if err := im.st.UpdateMachine(ctx, m); err != nil {
			return err
		}
		im.rep.Matched++
	}
	return nil
}

// pkiStick: every record of the stick is a PKI record (a site root hash,
// no PID/PPS). Such sticks are made with provstick setupbin pki and
// draw nothing from the pool, so the pool does not know them.
func pkiStick(recs []*ledger.Record) bool {
	for _, r := range recs {
		if r.Kind != "pki" || r.PID != "" {
			return false
		}
	}
	return len(recs) > 0
}

// pkiStick records the machines a PKI stick's ledger names (their DMI,
// MACs, EK hash and AMT version help the console tell them apart) and
// says what kind of stick it was; no pool entry is involved.
func (im *importer) pkiStick(ctx context.Context, label string, recs []*ledger.Record) error {
	var uuids []string
	for _, rec := range recs {
		if rec.AMT == nil || rec.AMT.UUID == "" {
			continue
		}
		m := machineOf(rec)
		if err := im.st.UpdateMachine(ctx, m); err != nil {
			return err
		}
		if !slices.Contains(uuids, m.UUID) {
			uuids = append(uuids, m.UUID)
		}
	}
	im.add(ctx, Discrepancy{Kind: KindPKIStick, Severity: SeverityInfo, Subject: "stick " + label,
		Detail: fmt.Sprintf("a PKI stick (site root hash, no PID/PPS; not drawn from this pool): %d records, %d machines recorded (%s)",
			len(recs), len(uuids), shortList(uuids, 3)),
		Advice: "nothing to do: these machines are provisioned to admin control mode when they say hello with the site's root hash"}, false)
	return nil
}

// machineOf is the machine a ledger record describes.
func machineOf(rec *ledger.Record) store.Machine {
	m := store.Machine{UUID: strings.ToLower(strings.TrimSpace(rec.AMT.UUID)), AMTVersion: rec.AMT.AMTVersion, MACs: rec.MACs}
	if rec.DMI != nil {
		m.DMISerial, m.DMIModel, m.DMIVendor = rec.DMI.Serial, rec.DMI.Model, rec.DMI.Vendor
	}
	if rec.TPM != nil {
		m.EKHash = rec.TPM.EKSHA256
	}
	return m
}

func pidDisplay(pid string) string {
	if p, err := setupbin.ParsePID(pid); err == nil {
		return p.Display()
	}
	return pid
}

func shortList(ss []string, n int) string {
	if len(ss) <= n {
		return strings.Join(ss, ", ")
	}
	return strings.Join(ss[:n], ", ") + fmt.Sprintf(" and %d more", len(ss)-n)
}
