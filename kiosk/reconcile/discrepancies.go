package reconcile

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/provstick/provstick/kiosk/store"
	"github.com/provstick/provstick/setupbin"
)

// Discrepancies returns what does not add up in the store at time now:
// the discrepancies kept by ledger imports (less a failed reachability
// check at the PC whose machine has said hello since), and those read from
// the entries, the kept ledger records and the hello log. Alarms come first,
// then warnings, then information.
func Discrepancies(ctx context.Context, st *store.Store, now time.Time) ([]Discrepancy, error) {
	var out []Discrepancy
	kept, err := st.StoredDiscrepancies(ctx)
	if err != nil {
		return nil, err
	}
	recs, err := st.LedgerRecords(ctx, "")
	if err != nil {
		return nil, err
	}
	ledgerByPID := map[string][]store.LedgerRecord{}
	for _, r := range recs {
		if r.PID != "" {
			ledgerByPID[r.PID] = append(ledgerByPID[r.PID], r)
		}
	}
	hellos, err := st.HelloSummaries(ctx)
	if err != nil {
		return nil, err
	}
	helloUUIDs := map[string][]string{}
	for _, h := range hellos {
		if h.UUID != "" {
			helloUUIDs[h.PID] = append(helloUUIDs[h.PID], strings.ToLower(h.UUID))
		}
	}
	for _, k := range kept {
		// A failed reachability check at the PC is moot once the
		// machine has said hello after all.
		if Kind(k.Kind) == KindKioskUnreachable {
			if p, err := setupbin.ParsePID(strings.TrimPrefix(k.Subject, "PID ")); err == nil && len(helloUUIDs[p.String()]) > 0 {
				continue
			}
		}
		out = append(out, Discrepancy{Kind: Kind(k.Kind), Severity: Severity(k.Severity), Subject: k.Subject, Detail: k.Detail, Advice: k.Advice, At: k.At, ID: k.ID})
	}

	// One PID, two machines: from the hello log and the ledgers together.
	machines := map[string][]string{}
	for pid, us := range helloUUIDs {
		machines[pid] = append(machines[pid], us...)
	}
	for pid, rs := range ledgerByPID {
		for _, r := range rs {
			if r.UUID != "" {
				machines[pid] = append(machines[pid], r.UUID)
			}
		}
	}
	pids := make([]string, 0, len(machines))
	for pid := range machines {
		pids = append(pids, pid)
	}
	slices.Sort(pids)
	for _, pid := range pids {
		us := slices.Compact(slices.Sorted(slices.Values(machines[pid])))
		if len(us) < 2 {
			continue
		}
		out = append(out, Discrepancy{Kind: KindCopiedStick, Severity: SeverityAlarm, Subject: "PID " + pidDisplay(pid),
			Detail: fmt.Sprintf("used by %d machines: %s", len(us), strings.Join(us, ", ")),
			Advice: "a copied stick or a restored setup.bin: find the machines, void the entry and give each a record from another stick"})
	}

	// Consumed, and no hello within the window.
	consumed, err := st.EntriesInStates(ctx, store.StateConsumed)
	if err != nil {
		return nil, err
	}
	for _, e := range consumed {
		if len(helloUUIDs[e.PID]) > 0 {
			continue
		}
		at := e.UpdatedAt
		for _, r := range ledgerByPID[e.PID] {
			// The target's clock may be wrong: trust it only when it is
			// before the import.
			if !r.At.IsZero() && r.At.Before(r.ImportedAt) && r.At.Before(at) {
				at = r.At
			}
		}
		if now.Sub(at) < HelloWindow {
			continue
		}
		machine := e.Machine
		if machine == "" {
			machine = "unknown"
		}
		out = append(out, Discrepancy{Kind: KindNoHello, Severity: SeverityWarning, Subject: "PID " + pidDisplay(e.PID),
			Detail: fmt.Sprintf("stick %s record %d consumed by machine %s at %s; no hello since (%s)", e.Stick, e.Record, machine,
				at.UTC().Format(time.RFC3339), now.Sub(at).Round(time.Minute)),
			Advice: "power the machine on again or check DNS (AMT restarts its hellos at power-on; provisionserver.<suffix> must name the kiosk)",
			At:     at})
	}

	// Hellos with PIDs no imported ledger names, grouped by stick.
	active, err := st.EntriesInStates(ctx, store.StateHelloSeen, store.StateProvisioned, store.StateFailed)
	if err != nil {
		return nil, err
	}
	imports, err := st.LedgerImports(ctx, "", 0)
	if err != nil {
		return nil, err
	}
	returned := map[string]time.Time{}
	for _, im := range imports {
		if im.Known && im.At.After(returned[im.Stick]) {
			returned[im.Stick] = im.At
		}
	}
	notIn := map[string][]string{}
	var sticks []string
	for _, e := range active {
		if len(ledgerByPID[e.PID]) > 0 || e.Stick == "" {
			continue
		}
		if _, ok := notIn[e.Stick]; !ok {
			sticks = append(sticks, e.Stick)
		}
		notIn[e.Stick] = append(notIn[e.Stick], pidDisplay(e.PID))
	}
	slices.Sort(sticks)
	for _, label := range sticks {
		ps := notIn[label]
		d := Discrepancy{Kind: KindNotInLedger, Severity: SeverityInfo, Subject: "stick " + label,
			Detail: fmt.Sprintf("%d machines said hello with PIDs of this stick that no imported ledger names: %s", len(ps), shortList(ps, 10)),
			Advice: "the stick has not come back yet: import its ledger when it does (provstick ledger import)"}
		if t, ok := returned[label]; ok {
			d.Severity = SeverityWarning
			d.Detail += fmt.Sprintf("; its ledger was last imported %s", t.UTC().Format(time.RFC3339))
			d.Advice = "import the stick's current ledger; if these PIDs are still missing, the records were taken by machines that did not boot the stick"
		}
		out = append(out, d)
	}

	// Hellos with PIDs this pool never issued.
	unknown, err := st.UnknownHelloPIDs(ctx)
	if err != nil {
		return nil, err
	}
	for _, h := range unknown {
		out = append(out, Discrepancy{Kind: KindUnknownPID, Severity: SeverityWarning, Subject: "PID " + pidDisplay(h.PID),
			Detail: fmt.Sprintf("machine %s said hello %d times (last %s) with a PID this pool never issued", h.UUID, h.Count, h.Last.UTC().Format(time.RFC3339)),
			Advice: "the machine took a record from another pool's stick: provision it at that kiosk, or unprovision it in the MEBx and use one of this pool's sticks",
			At:     h.Last})
	}

	// Entries left on lost sticks.
	lost, err := st.LostSticks(ctx)
	if err != nil {
		return nil, err
	}
	for _, l := range lost {
		if l.Allocated == 0 {
			continue
		}
		out = append(out, Discrepancy{Kind: KindLostStick, Severity: SeverityWarning, Subject: "stick " + l.Label,
			Detail: fmt.Sprintf("declared lost %s with %d entries still allocated", l.LostAt.UTC().Format(time.RFC3339), l.Allocated),
			Advice: fmt.Sprintf("void them so that nobody can use the stick: provstick ledger lost %s --void", l.Label),
			At:     l.LostAt})
	}
	slices.SortStableFunc(out, func(a, b Discrepancy) int { return rank(a.Severity) - rank(b.Severity) })
	return out, nil
}

func rank(s Severity) int {
	switch s {
	case SeverityAlarm:
		return 0
	case SeverityWarning:
		return 1
	}
	return 2
}
