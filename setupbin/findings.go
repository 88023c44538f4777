package setupbin

import "fmt"

// Severity ranks a finding.
type Severity uint8

const (
	SevInfo    Severity = iota // worth knowing, nothing wrong
	SevWarning                 // deviates from §2/§3 but firmware copes, or may
	SevError                   // firmware will ignore the file or fail the record
)

func (s Severity) String() string {
	switch s {
	case SevInfo:
		return "info"
	case SevWarning:
		return "warning"
	case SevError:
		return "error"
	}
	return fmt.Sprintf("severity %d", uint8(s))
}

// MarshalText renders the severity as "info", "warning" or "error".
func (s Severity) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// Finding is one named deviation from specs/setupbin.md. Code is stable
// (scripts and tests branch on it); Message is for people and never holds
// a secret. Record is the 0-based record index, as the consumed counter
// counts, or -1 for the header and the file as a whole.
type Finding struct {
	Code     string   `json:"code"`
	Severity Severity `json:"severity"`
	Offset   int64    `json:"offset"`
	Record   int      `json:"record"`
	Message  string   `json:"message"`
}

func (f Finding) String() string {
	if f.Record >= 0 {
		return fmt.Sprintf("%s %s at %#x (record %d): %s", f.Severity, f.Code, f.Offset, f.Record, f.Message)
	}
	return fmt.Sprintf("%s %s at %#x: %s", f.Severity, f.Code, f.Offset, f.Message)
}

// Finding codes. They are part of the API: never rename one.
const (
	// Header and file.
	CodeHeaderChunkCountZero = "header-chunk-count-zero" // 0x10 is 0: MeshCommander bug
	CodeHeaderChunkCount     = "header-chunk-count"      // 0x10 is neither 0 nor 1
	CodeRecordChunkCountZero = "record-chunk-count-zero" // 0x24 is 0: MeshCommander bug
	CodeRecordChunkCountHigh = "record-chunk-count-high" // 0x24 above 10
	CodeHeaderBytesUsed      = "header-bytes-used"       // 0x12 disagrees with the module list
	CodeHeaderRecordNumber   = "header-record-number"    // 0x14 not 0
	CodeHeaderReserved       = "header-reserved"         // 0x26 not 0
	CodeHeaderFlagsUnknown   = "header-flags-unknown"    // file flag bits other than bit 0
	CodeNoConsume            = "file-no-consume"         // don't-consume file (info)
	CodeNoConsumeV1          = "file-no-consume-v1"      // don't-consume on 1.0: not honoured
	CodeNoConsumeCounter     = "file-no-consume-counter" // don't-consume file with a counter ≠ 0
	CodeModuleListUnterm     = "module-list-unterminated"
	CodeModuleListTrailing   = "module-list-trailing" // non-zero bytes after the terminator
	CodeModuleListOrder      = "module-list-order"    // not ascending or duplicated
	CodeModuleUnknown        = "module-unknown"       // module other than 1 and 2 listed
	CodeModuleNotListed      = "module-not-listed"    // a record uses a module the list lacks
	CodeModuleUnused         = "module-unused"        // listed, no record uses it
	CodeFileSize             = "file-size"            // size ≠ 512 × (1 + N × chunks)
	CodeNoRecords            = "file-no-records"      // N is 0
	CodeManyRecords          = "file-many-records"    // N large: slow on old BIOS (info)
	CodeConsumedPastEnd      = "consumed-past-end"    // counter > N
	CodeExhausted            = "file-exhausted"       // counter == N on a consumable file

	// Records.
	CodeRecordType          = "record-type"            // type ≠ 1
	CodeRecordFlagsUnknown  = "record-flags-unknown"   // bits other than 0 and 1
	CodeRecordReserved      = "record-reserved"        // +8 not 0
	CodeRecordChunkCount    = "record-chunk-count"     // record's chunk count ≠ header's
	CodeRecordHeaderBytes   = "record-header-bytes"    // +18 not 24
	CodeRecordNumber        = "record-number"          // number ≠ index + 1
	CodeScrambledOldVersion = "record-scrambled-old"   // scrambled bit on 1.0–3.0 (UNCONFIRMED)
	CodeScrambleMixed       = "record-scramble-mixed"  // some records scrambled, others not
	CodeConsumedButValid    = "record-consumed-valid"  // index < counter, valid bit set
	CodeConsumedNotZeroed   = "record-consumed-body"   // consumed/invalid record, body not zero
	CodeInvalidUnconsumed   = "record-invalid-ahead"   // index ≥ counter, valid bit clear
	CodeValidZeroBody       = "record-valid-zero-body" // valid bit set, body all zero
	CodeMissingCurrentPw    = "record-no-current-password"
	CodePSKIncomplete       = "record-psk-incomplete" // PID without PPS or the reverse
	CodeRecordOrderRule     = "entry-order-rule"      // an ordering rule of §2.4 broken
	CodeEntryOrder          = "entry-order"           // entries not sorted by (module, variable)
	CodeEntryDuplicate      = "entry-duplicate"
	CodeEntryPastRecord     = "entry-past-record" // entry runs past the record end
	CodeEntryReserved       = "entry-reserved"
	CodeEntryPadding        = "entry-padding"  // non-zero padding after a value
	CodeEntryTrailing       = "entry-trailing" // non-zero bytes after the list end
	CodeEntryModuleUnknown  = "entry-module-unknown"
	CodeEntryVarUnknown     = "entry-var-unknown"
	CodeEntryVarLegacy      = "entry-var-legacy"
	CodeEntryVarVersion     = "entry-var-version" // variable newer than the file's version
	CodeEntryValue          = "entry-value"
	CodePIDCheck            = "entry-pid-check"
	CodePPSCheck            = "entry-pps-check"
	CodeNewPasswordRules    = "entry-new-password-rules"
	CodeProfileVersion      = "profile-version"  // the profile's firmware does not read this version
	CodeProfileVariable     = "profile-variable" // the profile's firmware does not accept this variable
	CodeProfileValue        = "profile-value"    // the profile's firmware rejects this value
)

// HasErrors reports whether any finding has SevError.
func HasErrors(fs []Finding) bool {
	for _, f := range fs {
		if f.Severity == SevError {
			return true
		}
	}
	return false
}

// findings collects findings with a hard cap so that a hostile file with
// 100,000 broken records cannot make the list itself the problem: past
// the cap, only a count is kept.
type findings struct {
	list    []Finding
	dropped int
}

const maxFindings = 10000

func (fs *findings) add(code string, sev Severity, off int64, rec int, format string, a ...any) {
	if len(fs.list) >= maxFindings {
		fs.dropped++
		return
	}
	fs.list = append(fs.list, Finding{Code: code, Severity: sev, Offset: off, Record: rec, Message: fmt.Sprintf(format, a...)})
}
