package ledger

// The QR text form of one ledger line, for sites where sticks do not
// come back (issue 8, check 7): the agent shows it as a QR code on the
// technician's screen, a phone's scanner turns it back into text, and the
// kiosk's ledger import takes a file of such texts (one a line).
//
// The form is QRPrefix followed by base45 (RFC 9285) of the line's bytes
// (no newline) compressed with raw DEFLATE (RFC 1951) against the preset
// dictionary qrDict. Base45's alphabet is QR's alphanumeric set, which
// packs 5.5 bits a character (byte mode: 8), and a phone's scanner gives
// it back as plain text. Decoding gives back the line byte for byte,
// checksum included, so a scanned line is verified like any other.
//
// The "1" in the prefix names the dictionary: changing qrDict needs a new
// prefix, and decoders keep the old dictionaries.

import (
	"bytes"
	"compress/flate"
	"errors"
	"fmt"
	"io"
	"strings"
)

// QRPrefix begins every QR text (provstick ledger, form 1). Upper case
// and ':' are in QR's alphanumeric set.
const QRPrefix = "PSL1:"

// ErrQR: a text is not a valid QR form of a ledger line.
var ErrQR = errors.New("ledger: not a valid QR text")

// qrDict primes the compressor with what every line holds: member names in
// Marshal's order and common values. Fragments later in the string cost
// fewer bits to refer to, so the most common come last. Never change it
// without changing QRPrefix.
const qrDict = `"kind":"psk""kind":"pki""device":"/dev/tpmrm0"` +
	`"case":"multiple-consumed""case":"counter-rolled-back""case":"nothing-consumed""case":"no-consume"` +
	`,"dmi":{"vendor":"","model":"","serial":"` +
	`"provisioning_state":"in","provisioning_mode":"","control_mode":"none"` +
	`,"macs":["00:,"tpm":{"ek_sha256":"","ek_cert":true"ek_cert":false},` +
	`"prev_consumed":,"skipped":[,"next_pid":"` +
	`,"amt":{"uuid":"-0000-4000-8000-","amt_version":"` +
	`{"v":1,"seq":,"time":"2026-","stick":"","case":"normal","consumed":,"record":,"index":,"pid":"` +
	`"},"full_sum":"sha256:","sum":"sha256:`

// EncodeQR returns the QR text of one ledger line (without its newline;
// a final newline is dropped).
func EncodeQR(line []byte) (string, error) {
	line = bytes.TrimSuffix(line, []byte("\n"))
	if len(line) > MaxLineLen || bytes.IndexByte(line, '\n') >= 0 {
		return "", fmt.Errorf("encoding a ledger line as QR text: %d bytes or several lines: %w", len(line), ErrFormat)
	}
	var z bytes.Buffer
	w, err := flate.NewWriterDict(&z, flate.BestCompression, []byte(qrDict))
	if err != nil {
		return "", fmt.Errorf("encoding a ledger line as QR text: %w", err)
	}
	w.Write(line) // a bytes.Buffer does not fail
	if err := w.Close(); err != nil {
		return "", fmt.Errorf("encoding a ledger line as QR text: %w", err)
	}
	return QRPrefix + string(appendBase45(nil, z.Bytes())), nil
}

// DecodeQR returns the ledger line (without a newline) that text, as
// EncodeQR made it, holds. It does not verify the line: Unmarshal does.
func DecodeQR(text string) ([]byte, error) {
	rest, ok := strings.CutPrefix(text, QRPrefix)
	if !ok {
		return nil, fmt.Errorf("%w: does not begin with %q", ErrQR, QRPrefix)
	}
	z, err := decodeBase45(rest)
	if err != nil {
		return nil, err
	}
	r := flate.NewReaderDict(bytes.NewReader(z), []byte(qrDict))
	line, err := io.ReadAll(io.LimitReader(r, MaxLineLen+1))
	if err != nil {
		return nil, fmt.Errorf("%w: deflate: %v", ErrQR, err)
	}
	if len(line) > MaxLineLen {
		return nil, fmt.Errorf("%w: the line is longer than %d bytes", ErrQR, MaxLineLen)
	}
	if bytes.IndexByte(line, '\n') >= 0 {
		return nil, fmt.Errorf("%w: holds more than one line", ErrQR)
	}
	return line, nil
}

// IsQR reports whether line (one line of a file) is meant as a QR text.
func IsQR(line []byte) bool {
	return bytes.HasPrefix(bytes.TrimLeft(line, " \t\ufeff"), []byte(QRPrefix))
}

// ExpandQR returns data with every line that is a QR text (IsQR) replaced
// by the ledger line it holds, so that Read verifies it like any other;
// other lines, ledger lines among them, are kept as they are. A QR text
// that does not decode, or whose line would take the output past max
// bytes (a few hundred characters can inflate to MaxLineLen), is kept
// too: Read reports it as a damaged line, with its line number in data.
// n counts the QR texts decoded, bad those that were not. A QR text's own
// line ending (CR LF from some phones) and leading blanks are dropped;
// trailing spaces are not (space is a base45 digit).
func ExpandQR(data []byte, max int) (out []byte, n, bad int) {
	if !bytes.Contains(data, []byte(QRPrefix)) {
		return data, 0, 0
	}
	out = make([]byte, 0, len(data))
	for len(data) > 0 {
		line, rest, found := bytes.Cut(data, []byte("\n"))
		data = rest
		if !IsQR(line) {
			out = append(out, line...)
		} else if dec, err := DecodeQR(string(bytes.TrimSuffix(bytes.TrimLeft(line, " \t\ufeff"), []byte("\r")))); err != nil || len(out)+len(dec)+1 > max {
			out = append(out, line...)
			bad++
		} else {
			out = append(out, dec...)
			n++
		}
		if found {
			out = append(out, '\n')
		}
	}
	return out, n, bad
}

// ForQR is what the agent puts in a QR code for r, the record of the
// ledger line whose checksum is fullSum ("sha256:…"): a line of its own,
// with its own checksum, that keeps what the kiosk's reconciliation reads
// (stick, seq, counter, record, PID, machine identity) and drops what
// makes a real line several kilobytes (the EK certificate, the ME's root
// certificate hashes, the reasons in Missing). FullSum names the full
// line by the first QRSumDigits hex digits of its checksum, so that the
// kiosk sees both as one line when the stick comes back.
//
// With minimal, the machine is named by its AMT UUID only (no DMI, MACs,
// EK hash): the form for a VGA text screen, where a QR code can have at
// most 50 rows of modules.
func ForQR(r *Record, fullSum string, minimal bool) *Record {
	if len(fullSum) > len("sha256:")+QRSumDigits {
		fullSum = fullSum[:len("sha256:")+QRSumDigits]
	}
	c := &Record{V: r.V, Seq: r.Seq, Time: r.Time.UTC(), Stick: r.Stick, Case: r.Case, Consumed: r.Consumed,
		PrevConsumed: r.PrevConsumed, Record: r.Record, Index: r.Index, PID: r.PID, Kind: r.Kind,
		Skipped: r.Skipped, FullSum: fullSum}
	if r.AMT != nil {
		c.AMT = &AMT{UUID: r.AMT.UUID}
		if !minimal {
			c.AMT.AMTVersion = r.AMT.AMTVersion
		}
	}
	if minimal {
		return c
	}
	if r.DMI != nil {
		c.DMI = &DMI{Vendor: r.DMI.Vendor, Model: r.DMI.Model, Serial: r.DMI.Serial}
	}
	c.MACs = r.MACs
	if r.TPM != nil {
		c.TPM = &TPM{EKSHA256: r.TPM.EKSHA256, EKCert: r.TPM.EKCert}
	}
	return c
}

// QRSumDigits is how many hex digits of the full line's checksum a QR
// line's FullSum keeps: 64 bits tell a stick's lines apart (the checksum
// is no signature, the stick is not trusted) and the 48 digits left out
// are 25 bytes a VGA-sized QR code cannot spare.
const QRSumDigits = 16

// SameLine reports whether a and b, the Sums of two lines or a line's
// Sum and a QR line's FullSum, name the same ledger line.
func SameLine(a, b string) bool {
	if len(a) > len(b) {
		a, b = b, a
	}
	return len(a) >= len("sha256:")+QRSumDigits && strings.HasPrefix(b, a)
}

const base45Alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:"

// appendBase45 appends the RFC 9285 encoding of b: each two bytes become
// three characters, a last single byte two.
func appendBase45(dst, b []byte) []byte {
	for len(b) >= 2 {
		n := int(b[0])<<8 | int(b[1])
		dst = append(dst, base45Alphabet[n%45], base45Alphabet[n/45%45], base45Alphabet[n/(45*45)])
		b = b[2:]
	}
	if len(b) == 1 {
		dst = append(dst, base45Alphabet[int(b[0])%45], base45Alphabet[int(b[0])/45])
	}
	return dst
}

var base45Value = func() (t [256]int8) {
	for i := range t {
		t[i] = -1
	}
	for i := range len(base45Alphabet) {
		t[base45Alphabet[i]] = int8(i)
	}
	return t
}()

// decodeBase45 is RFC 9285 §4.2's decoding, rejecting what §6 says a
// decoder must reject (a character outside the alphabet, a length of 3n+1,
// a group above 65535 or a last pair above 255).
func decodeBase45(s string) ([]byte, error) {
	if len(s)%3 == 1 {
		return nil, fmt.Errorf("%w: base45 length %d", ErrQR, len(s))
	}
	out := make([]byte, 0, len(s)/3*2+1)
	for i := 0; i < len(s); i += 3 {
		g := s[i:min(i+3, len(s))]
		n, f := 0, 1
		for j := range len(g) {
			v := base45Value[g[j]]
			if v < 0 {
				return nil, fmt.Errorf("%w: character %q at %d is not base45", ErrQR, g[j], len(QRPrefix)+i+j)
			}
			n += int(v) * f
			f *= 45
		}
		switch {
		case len(g) == 3 && n <= 0xffff:
			out = append(out, byte(n>>8), byte(n))
		case len(g) == 2 && n <= 0xff:
			out = append(out, byte(n))
		default:
			return nil, fmt.Errorf("%w: base45 group %q at %d out of range", ErrQR, g, len(QRPrefix)+i)
		}
	}
	return out, nil
}
