package store

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/provstick/provstick/setupbin"
)

// MaxImportSize bounds an import file (a million entries in CSV take about
// 80 MB).
const MaxImportSize = 256 << 20

// ImportError says which line of an import file is wrong. For secret
// fields it names the field and the rule, never the value.
type ImportError struct {
	Line  int
	Field string // "PID", "PPS", "password", a column name, or ""
	Err   error
}

func (e *ImportError) Error() string {
	if e.Field == "" {
		return fmt.Sprintf("line %d: %v", e.Line, e.Err)
	}
	return fmt.Sprintf("line %d: %s: %v", e.Line, e.Field, e.Err)
}

func (e *ImportError) Unwrap() error { return e.Err }

// ErrImportFormat: the import file is neither the CSV nor the JSON layout.
var ErrImportFormat = errors.New("store: not a valid import file")

// ParseImport reads an import file: CSV or JSON (a file whose first
// non-space byte is '[' is JSON). Check characters are verified here;
// duplicates are Import's business (it knows the pool too).
//
// CSV: one entry per line, PID,PPS[,new password[,current password]], '#'
// starts a comment line. A first line starting with "pid" is a header
// naming the columns instead: pid, pps, password (or new_password),
// current_password, profile, and — as "pool export" writes them — state,
// stick and record, where only state "free" is accepted (an entry that was
// ever drawn must never be drawn again).
//
// JSON: an array of objects with the same keys.
func ParseImport(r io.Reader) ([]ImportEntry, error) {
	data, err := io.ReadAll(io.LimitReader(r, MaxImportSize+1))
	if err != nil {
		return nil, fmt.Errorf("reading the import file: %w", err)
	}
	if len(data) > MaxImportSize {
		return nil, fmt.Errorf("import file larger than %d bytes: %w", MaxImportSize, ErrImportFormat)
	}
	if t := bytes.TrimLeft(data, " \t\r\n\ufeff"); len(t) > 0 && t[0] == '[' {
		return parseJSON(data)
	}
	return parseCSV(data)
}

// importRow is one entry's fields as text, before validation.
type importRow struct {
	PID             string `json:"pid"`
	PPS             string `json:"pps"`
	Password        string `json:"password"`
	NewPassword     string `json:"new_password"`
	CurrentPassword string `json:"current_password"`
	Profile         string `json:"profile"`
	State           string `json:"state"`
	Stick           string `json:"stick"`
	Record          any    `json:"record"`
}

func (row *importRow) entry(line int) (ImportEntry, error) {
	ie := ImportEntry{Line: line}
	var err error
	if ie.PID, err = setupbin.ParsePID(row.PID); err != nil {
		return ie, &ImportError{Line: line, Field: "PID", Err: err}
	}
	if ie.PPS, err = setupbin.ParsePPS(row.PPS); err != nil {
		return ie, &ImportError{Line: line, Field: "PPS", Err: err}
	}
	if row.Password != "" && row.NewPassword != "" {
		return ie, &ImportError{Line: line, Field: "password", Err: fmt.Errorf("both password and new_password given: %w", ErrImportFormat)}
	}
	ie.NewPassword = setupbin.Password(row.Password + row.NewPassword)
	if ie.NewPassword != "" {
		if err := setupbin.ValidateMEBxPassword(ie.NewPassword); err != nil {
			return ie, &ImportError{Line: line, Field: "password", Err: err}
		}
	}
	ie.CurrentPassword = setupbin.Password(row.CurrentPassword)
	if ie.CurrentPassword != "" {
		if err := setupbin.ValidateCurrentPassword(ie.CurrentPassword); err != nil {
			return ie, &ImportError{Line: line, Field: "current_password", Err: err}
		}
	}
	if row.Profile != "" && !ValidProfile(row.Profile) {
		return ie, &ImportError{Line: line, Field: "profile", Err: fmt.Errorf("%q: want one of %s: %w", row.Profile, strings.Join(Profiles, ", "), ErrImportFormat)}
	}
	ie.Profile = row.Profile
	if row.State != "" && row.State != string(StateFree) {
		return ie, &ImportError{Line: line, Field: "state", Err: fmt.Errorf("entry %s is %s: only free entries can be imported: %w", ie.PID.Display(), row.State, ErrImportFormat)}
	}
	return ie, nil
}

func parseCSV(data []byte) ([]ImportEntry, error) {
	cr := csv.NewReader(bytes.NewReader(data))
	cr.Comment = '#'
	cr.FieldsPerRecord = -1
	cr.TrimLeadingSpace = true
	cr.ReuseRecord = true
	var cols []string // nil: positional
	var out []ImportEntry
	for {
		rec, err := cr.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			var pe *csv.ParseError
			if errors.As(err, &pe) {
				return nil, &ImportError{Line: pe.Line, Err: fmt.Errorf("%v: %w", pe.Err, ErrImportFormat)}
			}
			return nil, fmt.Errorf("reading CSV: %w", err)
		}
		line, _ := cr.FieldPos(0)
		for i := range rec {
			rec[i] = strings.TrimSpace(rec[i])
		}
		if len(rec) == 1 && rec[0] == "" {
			continue
		}
		if cols == nil && len(out) == 0 && strings.EqualFold(strings.TrimPrefix(rec[0], "\ufeff"), "pid") {
			cols = make([]string, len(rec))
			seen := map[string]bool{}
			for i, c := range rec {
				c = strings.ToLower(strings.TrimPrefix(c, "\ufeff"))
				switch c {
				case "pid", "pps", "password", "new_password", "current_password", "profile", "state", "stick", "record":
				default:
					return nil, &ImportError{Line: line, Field: "header", Err: fmt.Errorf("unknown column %q: %w", c, ErrImportFormat)}
				}
				if seen[c] {
					return nil, &ImportError{Line: line, Field: "header", Err: fmt.Errorf("column %q twice: %w", c, ErrImportFormat)}
				}
				seen[c] = true
				cols[i] = c
			}
			if !seen["pid"] || !seen["pps"] {
				return nil, &ImportError{Line: line, Field: "header", Err: fmt.Errorf("columns pid and pps are required: %w", ErrImportFormat)}
			}
			continue
		}
		var row importRow
		if cols == nil {
			if len(rec) < 2 || len(rec) > 4 {
				return nil, &ImportError{Line: line, Err: fmt.Errorf("%d fields, want PID,PPS[,password[,current password]]: %w", len(rec), ErrImportFormat)}
			}
			row.PID, row.PPS = rec[0], rec[1]
			if len(rec) > 2 {
				row.Password = rec[2]
			}
			if len(rec) > 3 {
				row.CurrentPassword = rec[3]
			}
		} else {
			if len(rec) != len(cols) {
				return nil, &ImportError{Line: line, Err: fmt.Errorf("%d fields, the header names %d: %w", len(rec), len(cols), ErrImportFormat)}
			}
			for i, c := range cols {
				v := rec[i]
				switch c {
				case "pid":
					row.PID = v
				case "pps":
					row.PPS = v
				case "password":
					row.Password = v
				case "new_password":
					row.NewPassword = v
				case "current_password":
					row.CurrentPassword = v
				case "profile":
					row.Profile = v
				case "state":
					row.State = v
				}
			}
		}
		if len(out) >= MaxAdd {
			return nil, &ImportError{Line: line, Err: fmt.Errorf("more than %d entries: %w", MaxAdd, ErrImportFormat)}
		}
		ie, err := row.entry(line)
		if err != nil {
			return nil, err
		}
		out = append(out, ie)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no entries: %w", ErrImportFormat)
	}
	return out, nil
}

func parseJSON(data []byte) ([]ImportEntry, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	lineAt := func(off int64) int {
		off = min(max(off, 0), int64(len(data)))
		return 1 + bytes.Count(data[:off], []byte{'\n'})
	}
	tok, err := dec.Token()
	if err != nil || tok != json.Delim('[') {
		return nil, &ImportError{Line: lineAt(dec.InputOffset()), Err: fmt.Errorf("want a JSON array of entries: %w", ErrImportFormat)}
	}
	var out []ImportEntry
	for dec.More() {
		start := dec.InputOffset()
		var row importRow
		if err := dec.Decode(&row); err != nil {
			return nil, &ImportError{Line: lineAt(start), Err: fmt.Errorf("%s: %w", jsonReason(err), ErrImportFormat)}
		}
		// The entry starts after the separator the decoder skipped.
		line := lineAt(start + int64(len(data[start:dec.InputOffset()])-len(bytes.TrimLeft(data[start:dec.InputOffset()], " \t\r\n,"))))
		if len(out) >= MaxAdd {
			return nil, &ImportError{Line: line, Err: fmt.Errorf("more than %d entries: %w", MaxAdd, ErrImportFormat)}
		}
		ie, err := row.entry(line)
		if err != nil {
			return nil, err
		}
		out = append(out, ie)
	}
	if _, err := dec.Token(); err != nil {
		return nil, &ImportError{Line: lineAt(dec.InputOffset()), Err: fmt.Errorf("unterminated array: %w", ErrImportFormat)}
	}
	if rest := bytes.TrimSpace(data[dec.InputOffset():]); len(rest) > 0 {
		return nil, &ImportError{Line: lineAt(dec.InputOffset()), Err: fmt.Errorf("data after the array: %w", ErrImportFormat)}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no entries: %w", ErrImportFormat)
	}
	return out, nil
}

// jsonReason describes a JSON decoding error without quoting the input (a
// value may be a secret).
func jsonReason(err error) string {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return fmt.Sprintf("field %q has the wrong type (%s)", te.Field, te.Value)
	}
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return "JSON syntax error"
	}
	if s := err.Error(); strings.HasPrefix(s, "json: unknown field ") {
		return "unknown field " + strings.TrimPrefix(s, "json: unknown field ")
	}
	return "invalid JSON entry"
}
