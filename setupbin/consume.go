package setupbin

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"slices"
)

// ReadWriterAt is a file that can be read and written in place, such as
// *os.File. When it also has a Sync() error method (as *os.File does),
// Consume, Unconsume and Repair call it between writes so that the device
// sees them in order.
type ReadWriterAt interface {
	io.ReaderAt
	io.WriterAt
}

// Crash safety of Consume and Unconsume.
//
// Consuming record k takes three writes; Unconsume undoes them in reverse:
//
//	Consume:   1. counter k → k+1   2. clear valid bit of k   3. zero body of k
//	Unconsume: 1. write body of k   2. set valid bit of k     3. counter k+1 → k
//
// The invariant is that the record the counter points at, and every record
// after it, is whole and valid at every instant: the counter moves past a
// record before the record is touched, and moves back onto it only after it
// is whole again. So a crash (or a pulled stick) between any two writes,
// or in the middle of one, leaves a file the BIOS uses correctly — it never
// hands out a half-written record and never hands out a record twice — and
// the reader names the state:
//
//	after Consume 1 / before Unconsume 3: CodeConsumedButValid ("consumed
//	  counter k+1 but record k still valid: a consume was interrupted…")
//	after Consume 2 / during 3 / after Unconsume 1: CodeConsumedNotZeroed
//	  ("record k is consumed (valid bit clear) but its body is not zeroed")
//
// The other order (zero the record first, counter last) would, when
// interrupted, leave the counter pointing at an empty record that the BIOS
// — which never scans — would hand to every machine until someone repairs
// the file. Its cost is that an interrupted consume leaves record k's
// secrets in the file until Repair finishes the consume (Repair zeroes the
// bodies of records below the counter).

func syncIfPossible(f ReadWriterAt) error {
	if s, ok := f.(interface{ Sync() error }); ok {
		if err := s.Sync(); err != nil {
			return fmt.Errorf("syncing: %w", err)
		}
	}
	return nil
}

func writeAtSync(f ReadWriterAt, b []byte, off int64, what string) error {
	if _, err := f.WriteAt(b, off); err != nil {
		return fmt.Errorf("setupbin: writing %s at %#x: %w", what, off, err)
	}
	if err := syncIfPossible(f); err != nil {
		return fmt.Errorf("setupbin: writing %s: %w", what, err)
	}
	return nil
}

// inPlace is a setup.bin file opened for an in-place change: its header
// and layout, refused when the layout is not one the BIOS can use.
type inPlace struct {
	f  ReadWriterAt
	h  *Header
	p  *parser
	hb [ChunkSize]byte
}

func openInPlace(f ReadWriterAt, size int64, doing string) (*inPlace, error) {
	ip := &inPlace{f: f}
	if size < ChunkSize {
		return nil, fmt.Errorf("setupbin: %s: %w", doing, &FormatError{Field: "file size", Value: size, Err: ErrFormat, Msg: "shorter than the 512-byte header chunk"})
	}
	if n, err := f.ReadAt(ip.hb[:], 0); n < ChunkSize {
		return nil, fmt.Errorf("setupbin: %s: reading header: %w", doing, err)
	}
	h, err := headerFromBytes(ip.hb[:])
	if err != nil {
		return nil, fmt.Errorf("setupbin: %s: %w", doing, err)
	}
	ip.h = h
	ip.p = newParser(h, size)
	return ip, nil
}

// checkLayout refuses files whose header the BIOS cannot use: Consume and
// Unconsume do not guess; Repair first.
func (ip *inPlace) checkLayout(doing string) error {
	h := ip.h
	switch {
	case h.HeaderChunkCount != 1:
		return fmt.Errorf("setupbin: %s: %w", doing, &FormatError{Off: 0x10, Field: "HeaderChunkCount", Value: h.HeaderChunkCount, Err: ErrFormat, Msg: "want 1 (repair the file first)"})
	case h.ChunksPerRecord == 0:
		return fmt.Errorf("setupbin: %s: %w", doing, &FormatError{Off: 0x24, Field: "DataRecordChunkCount", Value: 0, Err: ErrFormat, Msg: "MeshCommander bug (repair the file first)"})
	case ip.p.nrec != int64(h.RecordCount) || ip.p.size != ChunkSize+ip.p.nrec*ip.p.recSize:
		return fmt.Errorf("setupbin: %s: %w", doing, &FormatError{Off: 0x1c, Field: "DataRecordCount", Value: h.RecordCount, Err: ErrFormat, Msg: fmt.Sprintf("file size %d does not hold exactly that many %d-byte records", ip.p.size, ip.p.recSize)})
	}
	return nil
}

func (ip *inPlace) recOff(k int64) int64 { return ChunkSize + k*ip.p.recSize }

// readRecord reads and parses record k.
func (ip *inPlace) readRecord(k int64) (*Record, error) {
	raw := make([]byte, ip.p.recSize)
	if n, err := ip.f.ReadAt(raw, ip.recOff(k)); n < len(raw) {
		return nil, fmt.Errorf("setupbin: reading record %d: %w", k, err)
	}
	rec := new(Record)
	ip.p.parseRecord(int(k), raw, ip.recOff(k), rec)
	return rec, nil
}

// Consume does what the BIOS does at power-on (specs/setupbin.md §1): it
// selects record number DataRecordsConsumed — it never scans — and, unless
// the file is a don't-consume file, consumes it: counter incremented, valid
// bit cleared, body zeroed, in that order (see the crash-safety note
// above). It returns the record as handed to the MEBx, entries decoded.
// A don't-consume file is not written and record 0 is returned.
//
// It fails with ErrNoUnusedRecord when every record is consumed, and
// without writing when the selected record is not a valid data record (the
// BIOS would hand it to the MEBx, which would fail).
func Consume(f ReadWriterAt, size int64) (*Record, error) {
	const doing = "consuming a record"
	ip, err := openInPlace(f, size, doing)
	if err != nil {
		return nil, err
	}
	if err := ip.checkLayout(doing); err != nil {
		return nil, err
	}
	k := int64(ip.h.NextIndex())
	if k >= int64(ip.h.RecordCount) {
		return nil, fmt.Errorf("setupbin: %s: consumed counter %d, %d records: %w", doing, ip.h.Consumed, ip.h.RecordCount, ErrNoUnusedRecord)
	}
	rec, err := ip.readRecord(k)
	if err != nil {
		return nil, err
	}
	if !rec.Valid() || rec.Type != RecordTypeData || len(rec.Entries) == 0 {
		return nil, fmt.Errorf("setupbin: %s: record %d is not a valid data record (type %d, flags %#x, %d entries); the file needs attention: %w", doing, k, rec.Type, uint32(rec.Flags), len(rec.Entries), ErrFormat)
	}
	if ip.h.NoConsumeHonoured() {
		return rec, nil
	}
	off := ip.recOff(k)
	// 1. The counter: from here on the BIOS hands out record k+1.
	if err := writeAtSync(f, le.AppendUint32(nil, uint32(k+1)), 0x20, "consumed counter"); err != nil {
		return nil, err
	}
	// 2. The valid bit.
	if err := writeAtSync(f, le.AppendUint32(nil, uint32(rec.Flags&^RecordValid)), off+4, fmt.Sprintf("record %d flags", k)); err != nil {
		return nil, err
	}
	// 3. The body, from the record's header byte count to its end.
	hb := int64(rec.HeaderBytes)
	if err := writeAtSync(f, make([]byte, ip.p.recSize-hb), off+hb, fmt.Sprintf("record %d body", k)); err != nil {
		return nil, err
	}
	return rec, nil
}

// Unconsume restores the last consumed record (index counter−1), for test
// sticks: the file keeps no copy, so rec must carry the record's original
// entries (from the secrets file or the pool; build it with PSK.Record).
// rec.Number, when not 0, must match the record's number on disk. The body
// is written (scrambled when the record's scrambled bit is set), then the
// valid bit set, then the counter decremented (see the crash-safety note
// above). A record still valid on disk (an interrupted consume) must hold
// exactly rec's entries, or ErrRecordMismatch.
func Unconsume(f ReadWriterAt, size int64, rec Record) error {
	const doing = "unconsuming a record"
	ip, err := openInPlace(f, size, doing)
	if err != nil {
		return err
	}
	if err := ip.checkLayout(doing); err != nil {
		return err
	}
	if ip.h.NoConsumeHonoured() {
		return fmt.Errorf("setupbin: %s: don't-consume file: nothing is ever consumed: %w", doing, ErrNoUnusedRecord)
	}
	if ip.h.Consumed == 0 || ip.h.Consumed > ip.h.RecordCount {
		return fmt.Errorf("setupbin: %s: consumed counter %d of %d records: %w", doing, ip.h.Consumed, ip.h.RecordCount, ErrNoUnusedRecord)
	}
	k := int64(ip.h.Consumed) - 1
	off := ip.recOff(k)
	raw := make([]byte, ip.p.recSize)
	if n, err := f.ReadAt(raw, off); n < len(raw) {
		return fmt.Errorf("setupbin: %s: reading record %d: %w", doing, k, err)
	}
	rh, _ := recordHeaderFromBytes(raw)
	if rec.Number != 0 && rec.Number != rh.Number {
		return fmt.Errorf("setupbin: %s: record %d has number %d on disk, the record given has %d: %w", doing, k, rh.Number, rec.Number, ErrRecordMismatch)
	}
	if rh.HeaderBytes != recordHeaderLen {
		return fmt.Errorf("setupbin: %s: record %d header bytes %d, want 24: %w", doing, k, rh.HeaderBytes, ErrFormat)
	}
	es := slices.Clone(rec.Entries)
	if err := checkEntries(int(k), es, ip.h.Version, ip.h.Modules, nil); err != nil {
		return fmt.Errorf("setupbin: %s: %w", doing, err)
	}
	body := make([]byte, 0, ip.p.recSize-recordHeaderLen)
	for i := range es {
		eh := entryHeader{Module: es[i].Var.Module(), Var: es[i].Var.ID(), Len: uint16(len(es[i].Value))}
		body = eh.appendBytes(body)
		body = append(body, es[i].Value...)
		for len(body)%4 != 0 {
			body = append(body, 0)
		}
	}
	if int64(len(body)) > ip.p.recSize-recordHeaderLen {
		return fmt.Errorf("setupbin: %s: record %d: its entries need %d bytes, the record holds %d: %w", doing, k, len(body)+recordHeaderLen, ip.p.recSize, ErrRecordTooLarge)
	}
	body = body[:ip.p.recSize-recordHeaderLen]
	if rh.Flags&RecordScrambled != 0 {
		scramble(body)
	}
	if rh.Flags&RecordValid != 0 {
		// An interrupted consume left the record whole: it must be ours.
		if !bytes.Equal(raw[recordHeaderLen:], body) {
			return fmt.Errorf("setupbin: %s: record %d is still valid on disk and holds other entries than the record given: %w", doing, k, ErrRecordMismatch)
		}
	} else {
		// 1. The body.
		if err := writeAtSync(f, body, off+recordHeaderLen, fmt.Sprintf("record %d body", k)); err != nil {
			return err
		}
		// 2. The valid bit.
		if err := writeAtSync(f, le.AppendUint32(nil, uint32(rh.Flags|RecordValid)), off+4, fmt.Sprintf("record %d flags", k)); err != nil {
			return err
		}
	}
	// 3. The counter: only now does the BIOS hand out record k again.
	return writeAtSync(f, le.AppendUint32(nil, uint32(k)), 0x20, "consumed counter")
}

// ConsumeFile opens name read-write and calls Consume.
func ConsumeFile(name string) (*Record, error) {
	var rec *Record
	err := withFile(name, func(f *os.File, size int64) error {
		var err error
		rec, err = Consume(f, size)
		return err
	})
	return rec, err
}

// UnconsumeFile opens name read-write and calls Unconsume.
func UnconsumeFile(name string, rec Record) error {
	return withFile(name, func(f *os.File, size int64) error { return Unconsume(f, size, rec) })
}

// RepairFile opens name read-write and calls Repair.
func RepairFile(name string) ([]Change, error) {
	var ch []Change
	err := withFile(name, func(f *os.File, size int64) error {
		var err error
		ch, err = Repair(f, size)
		return err
	})
	return ch, err
}

func withFile(name string, fn func(f *os.File, size int64) error) error {
	f, err := os.OpenFile(name, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("setupbin: opening %s: %w", name, err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("setupbin: opening %s: %w", name, err)
	}
	if err := fn(f, fi.Size()); err != nil {
		f.Close()
		return fmt.Errorf("%s: %w", name, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("setupbin: closing %s: %w", name, err)
	}
	return nil
}

// Change is one field Repair changed.
type Change struct {
	Offset int64  `json:"offset"`
	Field  string `json:"field"`
	Old    string `json:"old"`
	New    string `json:"new"`
}

func (c Change) String() string {
	return fmt.Sprintf("%s at %#x: %s → %s", c.Field, c.Offset, c.Old, c.New)
}

// Repair fixes, in place, what tools get wrong in the header: the
// MeshCommander chunk counts of 0 (header → 1, data records → what the
// size says), the header record number and reserved field, the module list
// (recomputed from the records; kept where consumed records hide what they
// used) and the header bytes used; and record chunk counts that disagree
// with the header. It also finishes interrupted consumes: the body of a
// record below the counter that is still present is zeroed and its valid
// bit cleared (see the crash-safety note above). It returns what it
// changed, nothing when the file was already right. It reads one record at
// a time. A file whose size no chunk count explains is not repairable.
func Repair(f ReadWriterAt, size int64) ([]Change, error) {
	const doing = "repairing"
	ip, err := openInPlace(f, size, doing)
	if err != nil {
		return nil, err
	}
	h, p := ip.h, ip.p
	if p.nrec != int64(h.RecordCount) || size != ChunkSize+p.nrec*p.recSize {
		return nil, fmt.Errorf("setupbin: %s: %w", doing, &FormatError{Off: 0x1c, Field: "DataRecordCount", Value: h.RecordCount, Err: ErrFormat, Msg: fmt.Sprintf("file size %d is not 512 × (1 + records × chunks) for any chunk count: not repairable", size)})
	}
	var changes []Change
	chg := func(off int64, field string, old, new any) {
		changes = append(changes, Change{Offset: off, Field: field, Old: fmt.Sprint(old), New: fmt.Sprint(new)})
	}
	nh := *h
	nh.HeaderChunkCount, nh.ChunksPerRecord, nh.RecordNumber, nh.Reserved = 1, uint16(p.chunks), 0, 0
	// Scan the records: modules used, chunk counts, interrupted consumes.
	raw := make([]byte, p.recSize)
	var recWrites []func() error
	nFixedChunks := 0
	for k := int64(0); k < p.nrec; k++ {
		off := ip.recOff(k)
		if n, err := f.ReadAt(raw, off); n < len(raw) {
			return nil, fmt.Errorf("setupbin: %s: reading record %d: %w", doing, k, err)
		}
		rh, _ := recordHeaderFromBytes(raw)
		if int64(rh.ChunkCount) != p.chunks {
			nFixedChunks++
			recWrites = append(recWrites, func() error {
				return writeAtSync(f, le.AppendUint16(nil, uint16(p.chunks)), off+16, fmt.Sprintf("record %d chunk count", k))
			})
		}
		if k < p.consumed && rh.HeaderBytes >= recordHeaderLen && int64(rh.HeaderBytes) < p.recSize {
			hb := int64(rh.HeaderBytes)
			if rh.Flags&RecordValid != 0 || !allBytes(raw[hb:], 0) {
				chg(off, fmt.Sprintf("record %d", k), "consume interrupted", "consumed (valid bit clear, body zeroed)")
				flags := rh.Flags &^ RecordValid
				recWrites = append(recWrites, func() error {
					if err := writeAtSync(f, le.AppendUint32(nil, uint32(flags)), off+4, fmt.Sprintf("record %d flags", k)); err != nil {
						return err
					}
					return writeAtSync(f, make([]byte, p.recSize-hb), off+hb, fmt.Sprintf("record %d body", k))
				})
			}
		}
		var rec Record
		p.parseRecord(int(k), raw, off, &rec)
	}
	nRec := len(changes)
	var mods []Module
	for _, m := range []Module{ModuleME, ModuleAMT} {
		if p.used[m] || (p.unread && slices.Contains(h.Modules, m)) {
			mods = append(mods, m)
		}
	}
	nh.Modules = mods
	nh.HeaderBytes = headerBytesFor(len(mods))
	if h.HeaderChunkCount != 1 {
		chg(0x10, "header chunk count", h.HeaderChunkCount, 1)
	}
	if h.ChunksPerRecord != nh.ChunksPerRecord {
		chg(0x24, "data record chunk count", h.ChunksPerRecord, nh.ChunksPerRecord)
	}
	if h.RecordNumber != 0 {
		chg(0x14, "header record number", h.RecordNumber, 0)
	}
	if h.Reserved != 0 {
		chg(0x26, "header reserved", h.Reserved, 0)
	}
	if !slices.Equal(h.Modules, mods) {
		chg(0x28, "module list", h.Modules, mods)
	}
	if h.HeaderBytes != nh.HeaderBytes {
		chg(0x12, "header bytes used", h.HeaderBytes, nh.HeaderBytes)
	}
	if nFixedChunks > 0 {
		chg(ChunkSize+16, "record chunk count", fmt.Sprintf("%d records differ", nFixedChunks), p.chunks)
	}
	headerChanges := len(changes) - nRec
	if nFixedChunks > 0 {
		headerChanges--
	}
	newHB := nh.appendBytes(make([]byte, 0, ChunkSize))
	if !bytes.Equal(newHB, ip.hb[:]) {
		if headerChanges == 0 {
			// Only bytes after the module list differed.
			chg(int64(headerFixedLen+2*len(mods)+2), "header bytes after the module list", "non-zero", "zero")
		}
		// The header first: it is one 512-byte sector write.
		if err := writeAtSync(f, newHB, 0, "header"); err != nil {
			return changes, err
		}
	}
	for _, w := range recWrites {
		if err := w(); err != nil {
			return changes, err
		}
	}
	return changes, nil
}
