package setupbin

import (
	"fmt"
	"io"
	"os"
)

// Record is one data record (§2.3). Reader fills every field; Writer
// ignores all but Entries and computes the rest (type 1, flags, chunk
// count, header bytes 24, number index+1).
type Record struct {
	Index       int         // 0-based position in the file, as the consumed counter counts
	Offset      int64       // file offset of the record
	Type        uint32      // +0: RecordTypeData
	Flags       RecordFlags // +4: RecordValid, RecordScrambled
	ChunkCount  uint16      // +16
	HeaderBytes uint16      // +18: 24
	Number      uint32      // +20: 1-based
	// Entries in file order, values descrambled. Nil for a record whose
	// valid bit is clear (consumed): its body is not read (§2.5).
	Entries []Entry
}

// Valid reports whether the record's valid bit is set (unused).
func (r *Record) Valid() bool { return r.Flags&RecordValid != 0 }

// Scrambled reports whether the record's scrambled bit is set.
func (r *Record) Scrambled() bool { return r.Flags&RecordScrambled != 0 }

// Lookup returns the first entry for v.
func (r *Record) Lookup(v Var) (Entry, bool) {
	for _, e := range r.Entries {
		if e.Var == v {
			return e, true
		}
	}
	return Entry{}, false
}

// Reader is a parsed setup.bin file. Header and Records are what the file
// says; Findings name every deviation from the spec, in file order.
type Reader struct {
	Header   Header
	Records  []*Record // the whole records the file holds, at most Header.RecordCount
	Findings []Finding
	// FindingsDropped counts findings left out past the cap of 10,000.
	FindingsDropped int
	Size            int64
}

// ReadCloser is a Reader opened from a named file.
type ReadCloser struct {
	f *os.File
	Reader
}

// Close closes the file.
func (rc *ReadCloser) Close() error { return rc.f.Close() }

// Open opens and parses the named setup.bin file.
func Open(name string) (*ReadCloser, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, fmt.Errorf("opening setup.bin: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("opening setup.bin: %w", err)
	}
	r, err := NewReader(f, fi.Size())
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("reading %s: %w", name, err)
	}
	return &ReadCloser{f: f, Reader: *r}, nil
}

// NewReader parses a setup.bin file of the given size from r. It fails
// only when the input is not a setup.bin at all (shorter than a header,
// unknown GUID, version that does not exist or does not match the GUID):
// a *FormatError wrapping ErrFormat. Every other deviation becomes a
// Finding. It reads the whole file into memory (size bytes); it never
// allocates by a count taken from the file.
func NewReader(r io.ReaderAt, size int64) (*Reader, error) {
	if size < ChunkSize {
		return nil, &FormatError{Off: 0, Field: "file size", Value: size, Err: ErrFormat, Msg: "shorter than the 512-byte header chunk"}
	}
	var hb [ChunkSize]byte
	if n, err := r.ReadAt(hb[:], 0); n < len(hb) {
		return nil, fmt.Errorf("setupbin: reading header: %w", err)
	}
	h, err := headerFromBytes(hb[:])
	if err != nil {
		return nil, err
	}
	rd := &Reader{Header: *h, Size: size}
	p := newParser(&rd.Header, size)
	p.checkHeader(hb[:])
	if p.nrec > 0 {
		// Read a batch of records at a time into one reused buffer; only
		// the entry lists are kept (copied into p's arena). Every
		// allocation is bounded by the file size, not by a count.
		p.copyValues = true
		batch := max(1, readBatchSize/p.recSize)
		buf := make([]byte, min(batch, p.nrec)*p.recSize)
		rd.Records = make([]*Record, p.nrec)
		var recs []Record
		for i := int64(0); i < p.nrec; {
			n := min(batch, p.nrec-i)
			b := buf[:n*p.recSize]
			off := ChunkSize + i*p.recSize
			if got, err := r.ReadAt(b, off); got < len(b) {
				return nil, fmt.Errorf("setupbin: reading records at %#x: %w", off, err)
			}
			for j := int64(0); j < n; j, i = j+1, i+1 {
				if len(recs) == 0 {
					recs = make([]Record, min(recordChunk, p.nrec-i))
				}
				rec := &recs[0]
				recs = recs[1:]
				p.parseRecord(int(i), b[j*p.recSize:(j+1)*p.recSize], off+j*p.recSize, rec)
				rd.Records[i] = rec
			}
		}
	}
	p.finish()
	rd.Findings = p.fs.list
	rd.FindingsDropped = p.fs.dropped
	return rd, nil
}

// HasErrors reports whether any finding is an error: firmware would
// ignore the file or fail a record.
func (r *Reader) HasErrors() bool { return HasErrors(r.Findings) }

// NoConsumeHonoured reports whether the BIOS hands record 0 to every
// machine: the don't-consume flag is set and the version is 2.0 or later.
func (h *Header) NoConsumeHonoured() bool { return h.NoConsume() && h.Version.Major() >= 2 }

// NextIndex returns the 0-based index of the record the BIOS hands out at
// the next boot: 0 on a don't-consume file, else the consumed counter.
func (h *Header) NextIndex() uint32 {
	if h.NoConsumeHonoured() {
		return 0
	}
	return h.Consumed
}

// Remaining returns how many records are left to hand out.
func (r *Reader) Remaining() int {
	if r.Header.NoConsumeHonoured() {
		return len(r.Records)
	}
	if int64(r.Header.Consumed) >= int64(len(r.Records)) {
		return 0
	}
	return len(r.Records) - int(r.Header.Consumed)
}

// Next returns the record the BIOS would hand out at the next boot, or
// ErrNoUnusedRecord.
func (r *Reader) Next() (*Record, error) {
	i := r.Header.NextIndex()
	if int64(i) >= int64(len(r.Records)) {
		return nil, fmt.Errorf("setupbin: consumed counter %d, %d records: %w", r.Header.Consumed, len(r.Records), ErrNoUnusedRecord)
	}
	return r.Records[i], nil
}

const (
	readBatchSize = 64 << 10 // bytes of records read at once
	recordChunk   = 128      // Records allocated at once
	entryChunk    = 1024     // Entries allocated at once
	arenaChunk    = 16 << 10 // value bytes allocated at once
)

// parser holds the layout derived from a header and collects findings.
type parser struct {
	copyValues bool   // copy entry lists out of the record buffer (reused)
	arena      []byte // where copied entry lists go
	h          *Header
	fs         findings
	size       int64
	chunks     int64 // chunks per record used for the layout
	recSize    int64
	nrec       int64   // whole records present, ≤ RecordCount
	consumed   int64   // records the counter says are consumed (0 on a don't-consume file)
	pool       []Entry // len 0: a record's entries are appended into its capacity
	used       [3]bool // modules 1, 2 used by a parsed record; [0]: another module
	unread     bool    // some record's entries were not read (consumed, broken)
	nScr       int
}

func newParser(h *Header, size int64) *parser {
	p := &parser{h: h, size: size, chunks: int64(h.ChunksPerRecord)}
	n := int64(h.RecordCount)
	if p.chunks == 0 {
		// MeshCommander bug: infer the chunk count from the size.
		p.chunks = 1
		if n > 0 && (size-ChunkSize)%(n*ChunkSize) == 0 && (size-ChunkSize)/(n*ChunkSize) >= 1 {
			p.chunks = (size - ChunkSize) / (n * ChunkSize)
		}
	}
	p.recSize = p.chunks * ChunkSize
	p.nrec = min(n, (size-ChunkSize)/p.recSize)
	if !h.NoConsumeHonoured() {
		p.consumed = int64(h.Consumed)
	}
	return p
}

// checkHeader adds the header findings (§2.2) and the file-level ones.
func (p *parser) checkHeader(b []byte) {
	h := p.h
	fs := &p.fs
	switch h.HeaderChunkCount {
	case 1:
	case 0:
		fs.add(CodeHeaderChunkCountZero, SevError, 0x10, -1, "header chunk count is 0: MeshCommander bug, firmware will ignore this file (repair fixes it)")
	default:
		fs.add(CodeHeaderChunkCount, SevError, 0x10, -1, "header chunk count is %d, want 1: the BIOS would look for record 0 at offset %#x", h.HeaderChunkCount, int(h.HeaderChunkCount)*ChunkSize)
	}
	switch {
	case h.ChunksPerRecord == 0:
		fs.add(CodeRecordChunkCountZero, SevError, 0x24, -1, "data record chunk count is 0: MeshCommander bug, firmware will ignore this file (repair fixes it; the size says %d)", p.chunks)
	case h.ChunksPerRecord > maxChunksAccepted:
		fs.add(CodeRecordChunkCountHigh, SevWarning, 0x24, -1, "data record chunk count is %d: newer MEBx accepts 1 to 10", h.ChunksPerRecord)
	}
	if h.RecordNumber != 0 {
		fs.add(CodeHeaderRecordNumber, SevWarning, 0x14, -1, "header record number is %d, want 0", h.RecordNumber)
	}
	if h.Reserved != 0 {
		fs.add(CodeHeaderReserved, SevWarning, 0x26, -1, "reserved header field is %#x, want 0", h.Reserved)
	}
	if h.Flags&^FlagNoConsume != 0 {
		fs.add(CodeHeaderFlagsUnknown, SevWarning, 0x1a, -1, "file flags %#x have unknown bits set", uint16(h.Flags))
	}
	if h.NoConsume() {
		if h.Version.Major() < 2 {
			fs.add(CodeNoConsumeV1, SevWarning, 0x1a, -1, "don't-consume flag set on a %s file: only honoured from 2.0, records will be consumed", h.Version)
		} else {
			fs.add(CodeNoConsume, SevInfo, 0x1a, -1, "don't-consume file: every machine gets record 0")
			if h.Consumed != 0 {
				fs.add(CodeNoConsumeCounter, SevWarning, 0x20, -1, "don't-consume file but the consumed counter is %d: the BIOS ignores it and hands out record 0", h.Consumed)
			}
		}
	}
	// Module list: terminated, ascending, known, trailing zero.
	term := -1
	for off := headerFixedLen; off+2 <= ChunkSize; off += 2 {
		if le.Uint16(b[off:]) == 0 {
			term = off
			break
		}
	}
	if term < 0 {
		fs.add(CodeModuleListUnterm, SevError, headerFixedLen, -1, "module list has no 0 terminator before the end of the header chunk")
	} else if !allBytes(b[term:ChunkSize], 0) {
		fs.add(CodeModuleListTrailing, SevWarning, int64(term+2), -1, "header has non-zero bytes after the module list terminator")
	}
	for i, m := range h.Modules {
		off := int64(headerFixedLen + 2*i)
		if m != ModuleME && m != ModuleAMT {
			fs.add(CodeModuleUnknown, SevError, off, -1, "module list names unknown module %d", m)
		}
		if i > 0 && m <= h.Modules[i-1] {
			fs.add(CodeModuleListOrder, SevWarning, off, -1, "module list not ascending: %d after %d", m, h.Modules[i-1])
		}
	}
	if want := headerBytesFor(len(h.Modules)); h.HeaderBytes != want {
		fs.add(CodeHeaderBytesUsed, SevWarning, 0x12, -1, "header bytes used is %d, want %d for %d modules", h.HeaderBytes, want, len(h.Modules))
	}
	// Size and counts.
	n := int64(h.RecordCount)
	want := uint64(ChunkSize) * (1 + uint64(n)*uint64(p.chunks))
	if uint64(p.size) != want {
		msg := fmt.Sprintf("file is %d bytes, want %d = 512 × (1 + %d records × %d chunks): newer BIOS rejects it", p.size, want, n, p.chunks)
		if p.nrec < n {
			msg += fmt.Sprintf("; only %d whole records present", p.nrec)
		}
		fs.add(CodeFileSize, SevError, p.size, -1, "%s", msg)
	}
	if n == 0 {
		fs.add(CodeNoRecords, SevWarning, 0x1c, -1, "file has no records")
	} else if n > 5000 {
		fs.add(CodeManyRecords, SevInfo, 0x1c, -1, "%d records: old BIOS read the whole file (100,000 records ≈ 3 minutes at boot)", n)
	}
	if !h.NoConsumeHonoured() {
		switch {
		case int64(h.Consumed) > n:
			fs.add(CodeConsumedPastEnd, SevError, 0x20, -1, "consumed counter %d is past the %d records", h.Consumed, n)
		case n > 0 && int64(h.Consumed) == n:
			fs.add(CodeExhausted, SevInfo, 0x20, -1, "all %d records consumed: nothing left to hand out", n)
		}
	}
}

// parseRecord parses record i from rb (one record's bytes; modified in
// place: descrambled) at file offset off into rec.
func (p *parser) parseRecord(i int, rb []byte, off int64, rec *Record) {
	fs := &p.fs
	rh, _ := recordHeaderFromBytes(rb) // rb is ≥ 512 bytes
	*rec = Record{Index: i, Offset: off, Type: rh.Type, Flags: rh.Flags, ChunkCount: rh.ChunkCount, HeaderBytes: rh.HeaderBytes, Number: rh.Number}
	if rh.Type != RecordTypeData {
		fs.add(CodeRecordType, SevError, off, i, "record %d type is %d, want 1 (data record)", i, rh.Type)
	}
	if rh.Flags&^(RecordValid|RecordScrambled) != 0 {
		fs.add(CodeRecordFlagsUnknown, SevWarning, off+4, i, "record %d flags %#x have unknown bits set", i, uint32(rh.Flags))
	}
	if rh.Reserved != 0 {
		fs.add(CodeRecordReserved, SevWarning, off+8, i, "record %d reserved field is %#x, want 0", i, rh.Reserved)
	}
	if int64(rh.ChunkCount) != p.chunks {
		fs.add(CodeRecordChunkCount, SevError, off+16, i, "record %d chunk count is %d, the header's is %d", i, rh.ChunkCount, p.chunks)
	}
	if rh.Number != uint32(i+1) {
		fs.add(CodeRecordNumber, SevWarning, off+20, i, "record %d number is %d, want %d", i, rh.Number, i+1)
	}
	scrambled := rh.Flags&RecordScrambled != 0
	if scrambled {
		p.nScr++
		if p.h.Version.Major() < 4 && p.nScr == 1 {
			fs.add(CodeScrambledOldVersion, SevInfo, off+4, i, "records scrambled in a %s file: Intel's tools scramble only 4.0 files; whether older firmware honours the bit is UNCONFIRMED", p.h.Version)
		}
	}
	start := int(rh.HeaderBytes)
	if start != recordHeaderLen {
		if start < recordHeaderLen || start >= len(rb) {
			fs.add(CodeRecordHeaderBytes, SevError, off+18, i, "record %d header bytes is %d, want 24: entries cannot start there", i, rh.HeaderBytes)
			p.unread = true
			return
		}
		fs.add(CodeRecordHeaderBytes, SevWarning, off+18, i, "record %d header bytes is %d, want 24", i, rh.HeaderBytes)
	}
	body := rb[start:]
	bodyOff := off + int64(start)
	zero := allBytes(body, 0)
	consumed := int64(i) < p.consumed
	valid := rh.Flags&RecordValid != 0
	switch {
	case !valid && consumed:
		if !zero {
			fs.add(CodeConsumedNotZeroed, SevWarning, bodyOff, i, "record %d is consumed (valid bit clear) but its body is not zeroed: a consume or unconsume was interrupted", i)
		}
		p.unread = true
		return
	case !valid:
		if zero {
			fs.add(CodeInvalidUnconsumed, SevError, off+4, i, "consumed counter %d but record %d already zeroed: a consume was interrupted before the counter was written, or the file was edited; the BIOS will hand out this empty record", p.consumed, i)
		} else {
			fs.add(CodeInvalidUnconsumed, SevError, off+4, i, "record %d valid bit is clear but the consumed counter is %d: the BIOS will hand it out anyway", i, p.consumed)
		}
		p.unread = true
		return
	case consumed:
		fs.add(CodeConsumedButValid, SevWarning, off+4, i, "consumed counter %d but record %d still valid: a consume was interrupted after the counter was written (or an unconsume before it was), or the file was edited", p.consumed, i)
		if zero {
			p.unread = true
			return
		}
	}
	if zero {
		fs.add(CodeValidZeroBody, SevError, bodyOff, i, "record %d is valid but its body is all zero", i)
		p.unread = true
		return
	}
	if scrambled {
		descramble(body)
	}
	rec.Entries = p.parseEntries(i, body, bodyOff)
}

// parseEntries walks the entry list of a (descrambled) record body.
func (p *parser) parseEntries(i int, body []byte, bodyOff int64) []Entry {
	fs := &p.fs
	ver := p.h.Version
	// Entries go straight into the pool; a record holds at most
	// len(body)/8 of them, so make sure that many fit.
	if maxN := len(body)/entryHeaderLen + 1; cap(p.pool) < maxN {
		p.pool = make([]Entry, 0, max(entryChunk, maxN))
	}
	es := p.pool[:0]
	var prev Var
	pos := 0
	for {
		if pos+entryHeaderLen > len(body) {
			if !allBytes(body[pos:], 0) {
				fs.add(CodeEntryPastRecord, SevError, bodyOff+int64(pos), i, "record %d: entry header at %#x runs past the record end", i, bodyOff+int64(pos))
			}
			break
		}
		eh, _ := entryHeaderFromBytes(body[pos:])
		eoff := bodyOff + int64(pos)
		if eh.Module == 0 || eh.Var == 0 {
			if !allBytes(body[pos:], 0) {
				fs.add(CodeEntryTrailing, SevWarning, eoff, i, "record %d has non-zero bytes after the end of its entry list", i)
			}
			break
		}
		v := MakeVar(eh.Module, eh.Var)
		vstart := pos + entryHeaderLen
		vend := vstart + int(eh.Len)
		if vend > len(body) {
			fs.add(CodeEntryPastRecord, SevError, eoff, i, "record %d: entry %d/%d claims %d value bytes, runs past the record end", i, eh.Module, eh.Var, eh.Len)
			break
		}
		padEnd := min(pad4(vend), len(body))
		if !allBytes(body[vend:padEnd], 0) {
			fs.add(CodeEntryPadding, SevWarning, bodyOff+int64(vend), i, "record %d: entry %d/%d has non-zero padding", i, eh.Module, eh.Var)
		}
		if eh.Reserved != 0 {
			fs.add(CodeEntryReserved, SevWarning, eoff+6, i, "record %d: entry %d/%d reserved field is %#x, want 0", i, eh.Module, eh.Var, eh.Reserved)
		}
		e := Entry{Var: v, Value: body[vstart:vend:vend], Offset: eoff}
		p.checkEntry(i, &e, ver)
		if len(es) > 0 {
			if v == prev {
				fs.add(CodeEntryDuplicate, SevWarning, eoff, i, "record %d: %s appears twice", i, v)
			} else if v < prev {
				fs.add(CodeEntryOrder, SevWarning, eoff, i, "record %d: %s after %s: entries not sorted by (module, variable)", i, v, prev)
			}
		}
		prev = v
		es = append(es, e)
		pos = padEnd
	}
	p.checkRecordRules(i, es, bodyOff)
	if len(es) == 0 {
		return nil
	}
	out := es[:len(es):len(es)]
	p.pool = p.pool[len(es):len(es)]
	if p.copyValues {
		// The record buffer is reused: keep a copy of the entry list.
		if len(p.arena) < pos {
			p.arena = make([]byte, max(arenaChunk, pos))
		}
		list := p.arena[:pos:pos]
		p.arena = p.arena[pos:]
		copy(list, body[:pos])
		for k := range out {
			start := int(out[k].Offset-bodyOff) + entryHeaderLen
			end := start + len(out[k].Value)
			out[k].Value = list[start:end:end]
		}
	}
	return out
}

// checkEntry adds the findings about one entry's variable and value.
func (p *parser) checkEntry(i int, e *Entry, ver Version) {
	fs := &p.fs
	m := e.Var.Module()
	switch m {
	case ModuleME, ModuleAMT:
		p.used[m] = true
	default:
		p.used[0] = true
		fs.add(CodeEntryModuleUnknown, SevError, e.Offset, i, "record %d: entry for unknown module %d: the MEBx aborts the record", i, m)
		return
	}
	if !p.listed(m) {
		fs.add(CodeModuleNotListed, SevWarning, e.Offset, i, "record %d uses module %d, missing from the header's module list", i, m)
	}
	info := LookupVar(e.Var)
	switch {
	case info == nil:
		fs.add(CodeEntryVarUnknown, SevError, e.Offset, i, "record %d: unknown variable %d/%d: newer MEBx aborts the record", i, m, e.Var.ID())
		return
	case info.Legacy:
		fs.add(CodeEntryVarLegacy, SevWarning, e.Offset, i, "record %d: %s is known only to older tools: newer MEBx aborts the record", i, e.Var)
	case info.Since > ver:
		fs.add(CodeEntryVarVersion, SevWarning, e.Offset, i, "record %d: %s needs format %s, the file is %s", i, e.Var, info.Since, ver)
	}
	if pr := checkValue(e, info, ver); pr != nil {
		fs.add(pr.code, SevError, e.Offset, i, "record %d: %s", i, pr.msg)
	}
}

func (p *parser) listed(m Module) bool {
	for _, x := range p.h.Modules {
		if x == m {
			return true
		}
	}
	return false
}

// checkRecordRules checks the rules over a whole valid record (§2.4, §3).
func (p *parser) checkRecordRules(i int, es []Entry, bodyOff int64) {
	fs := &p.fs
	var hasCur, hasPID, hasPPS bool
	var newAt, haltAt int64 = -1, -1
	var lastMod Module
	modOrderReported := false
	for _, e := range es {
		switch e.Var {
		case VarCurrentPassword:
			hasCur = true
			if newAt >= 0 {
				fs.add(CodeRecordOrderRule, SevError, e.Offset, i, "record %d: current MEBx password after the new one", i)
			}
		case VarNewPassword:
			newAt = e.Offset
		case VarPID:
			hasPID = true
		case VarPPS:
			hasPPS = true
		case VarProvisioningHalt:
			haltAt = e.Offset
		case VarPKIDNSSuffix, VarConfigServerFQDN, VarServerAddr:
			if haltAt >= 0 {
				fs.add(CodeRecordOrderRule, SevError, e.Offset, i, "record %d: %s after 2/28 provisioning halt/activate", i, e.Var)
			}
		}
		if m := e.Var.Module(); m < lastMod {
			if !modOrderReported {
				fs.add(CodeRecordOrderRule, SevError, e.Offset, i, "record %d: module %d entry after module %d", i, m, lastMod)
				modOrderReported = true
			}
		} else {
			lastMod = m
		}
	}
	if !hasCur {
		fs.add(CodeMissingCurrentPw, SevError, bodyOff, i, "record %d has no current MEBx password (1/1), which is mandatory", i)
	}
	if hasPID != hasPPS {
		fs.add(CodePSKIncomplete, SevWarning, bodyOff, i, "record %d has a PID without a PPS or a PPS without a PID", i)
	}
}

// finish adds the findings that need every record.
func (p *parser) finish() {
	if p.nScr > 0 && p.nScr < int(p.nrec) {
		p.fs.add(CodeScrambleMixed, SevWarning, ChunkSize, -1, "%d of %d records scrambled", p.nScr, p.nrec)
	}
	if !p.unread && p.nrec > 0 && p.nrec == int64(p.h.RecordCount) {
		for i, m := range p.h.Modules {
			if (m == ModuleME || m == ModuleAMT) && !p.used[m] {
				p.fs.add(CodeModuleUnused, SevWarning, int64(headerFixedLen+2*i), -1, "module %d is listed but no record uses it", m)
			}
		}
	}
}
