package ledger

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// Finding codes (stable: the kiosk and tests branch on them).
const (
	// CodeTornTail: the last line is incomplete or fails its checksum — what
	// a power cut during the last append leaves. Skipped; a warning.
	CodeTornTail = "torn-tail"
	// CodeDamagedLine: a line before the last fails to parse or verify
	// (usually an earlier torn tail that a later append moved off the end).
	// Skipped.
	CodeDamagedLine = "damaged-line"
	// CodeUnknownVersion: a valid line of a newer format. Skipped.
	CodeUnknownVersion = "unknown-version"
	// CodeLineTooLong: a line longer than MaxLineLen. Skipped.
	CodeLineTooLong = "line-too-long"
	// CodeSeqOrder: a record's Seq is not above the one before it.
	CodeSeqOrder = "seq-not-increasing"
)

// Finding is one thing the reader noticed. Line is 1-based.
type Finding struct {
	Line    int    `json:"line"`
	Code    string `json:"code"`
	Message string `json:"message"`
}

func (f Finding) String() string { return fmt.Sprintf("line %d: %s: %s", f.Line, f.Code, f.Message) }

// Log is a read ledger: its valid records in file order and what was
// wrong with the rest.
type Log struct {
	Records  []*Record
	Findings []Finding
	// Lines counts the lines read, valid or not (a torn tail included).
	Lines int
	// TornTail reports whether the file ends in a torn line.
	TornTail bool
}

// Last returns the last valid record, or nil.
func (l *Log) Last() *Record {
	if len(l.Records) == 0 {
		return nil
	}
	return l.Records[len(l.Records)-1]
}

// NextSeq is the Seq the next appended record gets: one above the highest
// seen, so a damaged line cannot make a number repeat.
func (l *Log) NextSeq() uint64 {
	var m uint64
	for _, r := range l.Records {
		m = max(m, r.Seq)
	}
	return m + 1
}

// Read reads a whole ledger. Only I/O errors are errors; every bad line
// becomes a Finding and is skipped.
func Read(r io.Reader) (*Log, error) {
	br := bufio.NewReaderSize(r, 4096)
	l := &Log{}
	type bad struct {
		line int
		msg  string
	}
	var pending *bad // the most recent bad line, torn tail if nothing valid follows
	flush := func(code string) {
		if pending != nil {
			l.Findings = append(l.Findings, Finding{pending.line, code, pending.msg})
			pending = nil
		}
	}
	var buf []byte
	for {
		chunk, err := br.ReadSlice('\n')
		if len(buf)+len(chunk) <= MaxLineLen+1 {
			buf = append(buf, chunk...)
		} else {
			buf = append(buf[:0], "\x00too long"...) // keep a marker, not the bytes
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		if err != nil && !errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("reading ledger: %w", err)
		}
		if len(buf) == 0 {
			break
		}
		l.Lines++
		n := l.Lines
		complete := buf[len(buf)-1] == '\n'
		line := bytes.TrimSuffix(buf, []byte("\n"))
		switch {
		case bytes.HasPrefix(buf, []byte("\x00too long")):
			flush(CodeDamagedLine)
			l.Findings = append(l.Findings, Finding{n, CodeLineTooLong, fmt.Sprintf("longer than %d bytes", MaxLineLen)})
		case !complete:
			flush(CodeDamagedLine)
			pending = &bad{n, fmt.Sprintf("%d bytes without a newline", len(line))}
		default:
			rec, perr := Unmarshal(line)
			switch {
			case perr == nil:
				flush(CodeDamagedLine)
				if last := l.Last(); last != nil && rec.Seq <= last.Seq {
					l.Findings = append(l.Findings, Finding{n, CodeSeqOrder, fmt.Sprintf("seq %d after %d", rec.Seq, last.Seq)})
				}
				l.Records = append(l.Records, rec)
			case errors.Is(perr, ErrVersion):
				flush(CodeDamagedLine)
				l.Findings = append(l.Findings, Finding{n, CodeUnknownVersion, perr.Error()})
			default:
				flush(CodeDamagedLine)
				pending = &bad{n, describe(line, perr)}
			}
		}
		buf = buf[:0]
		if err != nil {
			break
		}
	}
	if pending != nil {
		l.TornTail = true
		flush(CodeTornTail)
	}
	return l, nil
}

func describe(line []byte, err error) string {
	if len(bytes.Trim(line, "\x00")) == 0 {
		return fmt.Sprintf("%d NUL bytes", len(line))
	}
	return fmt.Sprintf("%d bytes: %v", len(line), err)
}

// ReadFile reads the ledger at name. A file that does not exist is an
// empty ledger.
func ReadFile(name string) (*Log, error) {
	f, err := os.Open(name)
	if errors.Is(err, os.ErrNotExist) {
		return &Log{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("opening ledger: %w", err)
	}
	defer f.Close()
	l, err := Read(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return l, nil
}

// writeChunk, when positive, splits the append into writes of that many
// bytes. Tests set it so that a killed writer can leave a torn line.
var writeChunk = 0

// Append adds r as one line at the end of the file name (created if
// missing, with its directory entry fsynced), after a newline if the file
// does not end in one (a torn tail stays where it is, on a line of its
// own). It returns once the file and the directory are fsynced. Earlier
// bytes are never written.
func Append(name string, r *Record) error {
	line, err := Marshal(r)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return fmt.Errorf("opening ledger for append: %w", err)
	}
	defer f.Close()
	end, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return fmt.Errorf("seeking to the end of the ledger: %w", err)
	}
	if end > 0 {
		var last [1]byte
		if _, err := f.ReadAt(last[:], end-1); err != nil {
			return fmt.Errorf("reading the ledger's last byte: %w", err)
		}
		if last[0] != '\n' {
			line = append([]byte{'\n'}, line...)
		}
	}
	if err := writeAt(f, line, end); err != nil {
		return fmt.Errorf("appending to the ledger: %w", err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("syncing the ledger: %w", err)
	}
	if err := syncDir(filepath.Dir(name)); err != nil {
		return fmt.Errorf("syncing the ledger's directory: %w", err)
	}
	return f.Close()
}

func writeAt(f *os.File, b []byte, off int64) error {
	step := len(b)
	if writeChunk > 0 {
		step = writeChunk
	}
	for len(b) > 0 {
		n := min(step, len(b))
		if _, err := f.WriteAt(b[:n], off); err != nil {
			return err
		}
		b, off = b[n:], off+int64(n)
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !errors.Is(err, os.ErrInvalid) {
		return err
	}
	return nil
}
