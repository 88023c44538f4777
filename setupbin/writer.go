package setupbin

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
)

// ErrRecordCount: a Writer was given more records than it declared, or
// closed with fewer.
var ErrRecordCount = errors.New("setupbin: record count differs from the declared count")

// ErrRecordTooLarge: a record's entries do not fit its chunks. Nothing is
// ever split across records.
var ErrRecordTooLarge = errors.New("setupbin: record does not fit its chunks")

// ScrambleMode chooses whether record bodies are scrambled (§2.5).
type ScrambleMode uint8

const (
	// ScrambleDefault scrambles 4.0 files only, as Intel's tools do.
	ScrambleDefault ScrambleMode = iota
	// ScrambleOff never scrambles.
	ScrambleOff
	// ScrambleOn scrambles. With versions 1.0–3.0 it needs
	// WriterOptions.UnconfirmedScrambleOld: whether that firmware honours
	// the bit is UNCONFIRMED (specs/setupbin.md §2.5).
	ScrambleOn
)

// WriterOptions configure a Writer. The header comes first in the file and
// holds the record count and module list, so both are declared up front.
type WriterOptions struct {
	// Version is the format version; 0 means the profile's default, or
	// 4.0 without a profile.
	Version Version
	// Profile, when set, makes the Writer refuse versions the
	// generation does not read and variables it does not accept. Nil
	// checks only the catalogue and the version.
	Profile *Profile
	// Records is N, the number of records the caller will add. Close
	// fails unless exactly N were added; AddRecord fails past N.
	Records uint32
	// Modules is the header's module list. Nil means {1, 2} (none when
	// Records is 0). AddRecord refuses entries for unlisted modules and
	// Close fails when a listed module was never used, so the list is
	// always exact (that check is skipped when Consumed > 0: consumed
	// records hide which modules they used).
	Modules []Module
	// NoConsume sets the don't-consume file flag: every machine gets
	// record 0 (honoured from 2.0; refused for 1.0).
	NoConsume bool
	// Scramble chooses scrambling (default: 4.0 only).
	Scramble ScrambleMode
	// UnconfirmedScrambleOld allows ScrambleOn with 1.0–3.0 (UNCONFIRMED
	// that firmware honours it).
	UnconfirmedScrambleOld bool
	// ChunksPerRecord is the record size in 512-byte chunks, 1–10; 0
	// means 1, the size in every file seen.
	ChunksPerRecord uint16
	// Consumed writes the first Consumed records as the BIOS leaves them
	// once consumed (valid bit clear, body zero) and sets the counter;
	// AddRecord for them must carry no entries. For fixtures and for
	// writing back a file that was read; 0 for new files.
	Consumed uint32
	// Logger receives debug lines (never a secret); nil discards.
	Logger *slog.Logger
}

// Writer streams a setup.bin file: the header at once, then each record as
// it is added. Its memory does not grow with the number of records.
type Writer struct {
	w        io.Writer
	h        Header
	prof     *Profile
	scramble bool
	recSize  int
	buf      []byte // pending output, flushed when full
	n        uint32 // records added
	used     [3]bool
	scratch  []Entry
	err      error // sticky write error
	closed   bool
	log      *slog.Logger
}

const writeBufSize = 64 << 10

// NewWriter checks the options and returns a Writer to w. Nothing is
// written to w before the first AddRecord or Close.
func NewWriter(w io.Writer, opts WriterOptions) (*Writer, error) {
	ver := opts.Version
	if ver == 0 {
		ver = V4_0
		if opts.Profile != nil {
			ver = opts.Profile.DefaultVersion
		}
	}
	optErr := func(field string, v any, reason string) error {
		return fmt.Errorf("setupbin: writer option %s = %v: %s: %w", field, v, reason, ErrValue)
	}
	if !ver.Valid() {
		return nil, optErr("Version", ver, "only 1.0, 2.0, 2.1, 3.0 and 4.0 exist")
	}
	if opts.Profile != nil && !opts.Profile.Reads(ver) {
		return nil, optErr("Version", ver, fmt.Sprintf("profile %s reads only %s", opts.Profile.Name, versionList(opts.Profile.Versions)))
	}
	chunks := opts.ChunksPerRecord
	if chunks == 0 {
		chunks = 1
	}
	if chunks > MaxChunksPerRecord {
		return nil, optErr("ChunksPerRecord", chunks, "want 1 to 10")
	}
	if opts.NoConsume && ver.Major() < 2 {
		return nil, optErr("NoConsume", true, "the don't-consume flag needs format 2.0 or later")
	}
	if opts.Consumed > opts.Records {
		return nil, optErr("Consumed", opts.Consumed, fmt.Sprintf("more than the %d records", opts.Records))
	}
	if opts.NoConsume && opts.Consumed != 0 {
		return nil, optErr("Consumed", opts.Consumed, "a don't-consume file is never consumed")
	}
	var scr bool
	switch opts.Scramble {
	case ScrambleDefault:
		scr = ver.Major() == 4
	case ScrambleOff:
	case ScrambleOn:
		if ver.Major() < 4 && !opts.UnconfirmedScrambleOld {
			return nil, optErr("Scramble", "on", fmt.Sprintf("Intel's tools scramble only 4.0 files; whether %s firmware honours it is UNCONFIRMED (set UnconfirmedScrambleOld to force)", ver))
		}
		scr = true
	default:
		return nil, optErr("Scramble", opts.Scramble, "unknown mode")
	}
	mods := opts.Modules
	if mods == nil && opts.Records > 0 {
		mods = []Module{ModuleME, ModuleAMT}
	}
	mods = slices.Clone(mods)
	slices.Sort(mods)
	for i, m := range mods {
		if m != ModuleME && m != ModuleAMT {
			return nil, optErr("Modules", mods, fmt.Sprintf("unknown module %d", m))
		}
		if i > 0 && m == mods[i-1] {
			return nil, optErr("Modules", mods, fmt.Sprintf("module %d twice", m))
		}
	}
	var flags FileFlags
	if opts.NoConsume {
		flags |= FlagNoConsume
	}
	wr := &Writer{
		w:        w,
		prof:     opts.Profile,
		scramble: scr,
		recSize:  int(chunks) * ChunkSize,
		log:      opts.Logger,
		h: Header{
			Version:          ver,
			HeaderChunkCount: 1, // never the MeshCommander 0 (§2.2)
			HeaderBytes:      headerBytesFor(len(mods)),
			Flags:            flags,
			RecordCount:      opts.Records,
			Consumed:         opts.Consumed,
			ChunksPerRecord:  chunks,
			Modules:          mods,
		},
	}
	if wr.log == nil {
		wr.log = slog.New(slog.DiscardHandler)
	}
	size := max(writeBufSize/wr.recSize, 1) * wr.recSize
	wr.buf = wr.h.appendBytes(make([]byte, 0, size+ChunkSize))
	wr.log.Debug("setupbin: writing", "version", ver.String(), "records", opts.Records, "scrambled", scr, "chunks", chunks)
	return wr, nil
}

// Header returns the header the Writer writes.
func (w *Writer) Header() Header {
	h := w.h
	h.Modules = slices.Clone(h.Modules)
	return h
}

// Scrambled reports whether the Writer scrambles record bodies.
func (w *Writer) Scrambled() bool { return w.scramble }

// AddRecord checks rec's entries, sorts them by (module, variable) and
// appends the record. Only rec.Entries is used. A record that is refused
// (an error wrapping ErrValue, ErrRecordTooLarge or ErrRecordCount) is not
// counted and the Writer stays usable; a write error is sticky.
func (w *Writer) AddRecord(rec Record) error {
	if w.err != nil {
		return w.err
	}
	if w.closed {
		return errors.New("setupbin: AddRecord after Close")
	}
	idx := w.n
	if idx >= w.h.RecordCount {
		return fmt.Errorf("setupbin: adding record %d: %d declared: %w", idx, w.h.RecordCount, ErrRecordCount)
	}
	consumed := idx < w.h.Consumed
	es := append(w.scratch[:0], rec.Entries...)
	w.scratch = es[:0]
	if consumed {
		if len(es) != 0 {
			return fmt.Errorf("setupbin: adding record %d: it is written consumed (WriterOptions.Consumed = %d) and must carry no entries: %w", idx, w.h.Consumed, ErrValue)
		}
	} else if err := checkEntries(int(idx), es, w.h.Version, w.h.Modules, w.prof); err != nil {
		return err
	}
	// Size first: nothing is written for a record that does not fit.
	need := recordHeaderLen
	for i := range es {
		need += entryHeaderLen + pad4(len(es[i].Value))
	}
	if need > w.recSize {
		return fmt.Errorf("setupbin: adding record %d: its entries need %d bytes, %d chunk(s) hold %d: %w", idx, need, w.recSize/ChunkSize, w.recSize, ErrRecordTooLarge)
	}
	flags := RecordFlags(0)
	if !consumed {
		flags |= RecordValid
	}
	if w.scramble {
		flags |= RecordScrambled
	}
	start := len(w.buf)
	rh := recordHeader{Type: RecordTypeData, Flags: flags, ChunkCount: w.h.ChunksPerRecord, HeaderBytes: recordHeaderLen, Number: idx + 1}
	b := rh.appendBytes(w.buf)
	for i := range es {
		e := &es[i]
		eh := entryHeader{Module: e.Var.Module(), Var: e.Var.ID(), Len: uint16(len(e.Value))}
		b = eh.appendBytes(b)
		b = append(b, e.Value...)
		for len(b)%4 != 0 {
			b = append(b, 0)
		}
	}
	end := start + w.recSize
	b = b[:end]
	clear(b[start+need : end])
	if w.scramble && !consumed {
		scramble(b[start+recordHeaderLen : end])
	}
	w.buf = b
	w.n++
	for i := range es {
		w.used[es[i].Var.Module()] = true
	}
	if len(w.buf)+w.recSize > cap(w.buf) {
		return w.flush()
	}
	return nil
}

// checkEntries sorts es by (module, variable) and refuses what the
// catalogue, the version, the module list or the profile (nil: none)
// rejects. Messages name the variable, never a secret value.
func checkEntries(idx int, es []Entry, ver Version, mods []Module, prof *Profile) error {
	slices.SortStableFunc(es, func(a, b Entry) int { return int(int64(a.Var) - int64(b.Var)) })
	bad := func(e *Entry, f string, a ...any) error {
		return fmt.Errorf("setupbin: adding record %d: %s: %s: %w", idx, e.Var, fmt.Sprintf(f, a...), ErrValue)
	}
	hasCur := false
	for i := range es {
		e := &es[i]
		m := e.Var.Module()
		if !slices.Contains(mods, m) {
			return bad(e, "module %d is not in the declared module list %v", m, mods)
		}
		if i > 0 && es[i-1].Var == e.Var {
			return bad(e, "appears twice")
		}
		info := LookupVar(e.Var)
		switch {
		case info == nil:
			return bad(e, "unknown variable: the MEBx aborts the record")
		case info.Legacy:
			return bad(e, "known only to older tools: newer MEBx aborts the record")
		case info.Since > ver:
			return bad(e, "needs format %s, writing %s", info.Since, ver)
		}
		if prof != nil {
			if !prof.Accepts(e.Var) {
				return bad(e, "not accepted by profile %s", prof.Name)
			}
			if pr := prof.checkValue(e); pr != nil {
				return fmt.Errorf("setupbin: adding record %d: %s: %w", idx, pr.msg, ErrValue)
			}
		}
		if pr := checkValue(e, info, ver); pr != nil {
			err := ErrValue
			if pr.code == CodePIDCheck || pr.code == CodePPSCheck {
				err = ErrCheckChar
			}
			return fmt.Errorf("setupbin: adding record %d: %s: %w", idx, pr.msg, err)
		}
		if e.Var == VarCurrentPassword {
			hasCur = true
		}
	}
	if !hasCur {
		return fmt.Errorf("setupbin: adding record %d: no current MEBx password (1/1), which is mandatory: %w", idx, ErrValue)
	}
	return nil
}

func (w *Writer) flush() error {
	if len(w.buf) == 0 {
		return nil
	}
	if _, err := w.w.Write(w.buf); err != nil {
		w.err = fmt.Errorf("setupbin: writing records: %w", err)
		return w.err
	}
	w.buf = w.buf[:0]
	return nil
}

// Close writes what is pending. It fails (after writing) when fewer
// records were added than declared, or when a declared module was never
// used: the output is then not a valid file. It does not close the
// underlying writer.
func (w *Writer) Close() error {
	if w.closed {
		return w.err
	}
	w.closed = true
	if err := w.flush(); err != nil {
		return err
	}
	if w.n != w.h.RecordCount {
		return fmt.Errorf("setupbin: closing after %d of %d declared records; the output is incomplete: %w", w.n, w.h.RecordCount, ErrRecordCount)
	}
	if w.h.Consumed == 0 { // consumed records hid which modules they used
		for _, m := range w.h.Modules {
			if !w.used[m] {
				return fmt.Errorf("setupbin: module %d declared in WriterOptions.Modules but no record used it; the header's list is wrong: %w", m, ErrValue)
			}
		}
	}
	return nil
}
