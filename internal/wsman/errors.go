package wsman

import (
	"encoding/xml"
	"errors"
	"fmt"
	"strconv"
)

// Status is an AMT method ReturnValue (PT_STATUS_*). A non-zero Status is an
// error; callers branch with errors.Is(err, wsman.StatusInvalidPassword).
type Status uint32

// The return values spec §6 names, and the neighbours a device may send.
const (
	StatusSuccess                  Status = 0
	StatusInternalError            Status = 1
	StatusNotReady                 Status = 2
	StatusInvalidPTMode            Status = 3
	StatusInvalidMessageLength     Status = 4
	StatusInvalidName              Status = 12
	StatusNotPermitted             Status = 16
	StatusMaxLimitReached          Status = 23
	StatusAuthenticationFailed     Status = 25
	StatusUnsupportedVersion       Status = 29
	StatusRequestUnexpected        Status = 30
	StatusInvalidProvisioningState Status = 32
	StatusUnsupportedObject        Status = 33
	StatusInvalidTime              Status = 34
	StatusInvalidIndex             Status = 35
	StatusInvalidParameter         Status = 36
	StatusFlashWriteLimitExceeded  Status = 38
	StatusInvalidPIDFormat         Status = 42
	StatusInvalidPPSFormat         Status = 43
	StatusDisabledByPolicy         Status = 1024
	StatusInvalidHandle            Status = 2053
	StatusInvalidPassword          Status = 2054
	StatusInvalidRealm             Status = 2055
	StatusStorageACLEntryInUse     Status = 2056
	StatusDataMissing              Status = 2057
	StatusDuplicate                Status = 2058
	StatusPKIMissingKeys           Status = 2060
	StatusPKIGeneratingKeys        Status = 2061
	StatusInvalidKey               Status = 2062
	StatusInvalidCert              Status = 2063
	StatusCertKeyNotMatch          Status = 2064
	StatusUnsupported              Status = 2066
	StatusNotFound                 Status = 2068
	StatusInvalidCredentials       Status = 2069
	StatusMaxKerbDomainReached     Status = 2065
	StatusAuditFail                Status = 2075
)

var statusNames = map[Status]string{
	StatusSuccess:                  "SUCCESS",
	StatusInternalError:            "INTERNAL_ERROR",
	StatusNotReady:                 "NOT_READY",
	StatusInvalidPTMode:            "INVALID_PT_MODE",
	StatusInvalidMessageLength:     "INVALID_MESSAGE_LENGTH",
	StatusInvalidName:              "INVALID_NAME",
	StatusNotPermitted:             "NOT_PERMITTED",
	StatusMaxLimitReached:          "MAX_LIMIT_REACHED",
	StatusAuthenticationFailed:     "AUTHENTICATION_FAILED",
	StatusUnsupportedVersion:       "UNSUPPORTED_VERSION",
	StatusRequestUnexpected:        "REQUEST_UNEXPECTED",
	StatusInvalidProvisioningState: "INVALID_PROVISIONING_STATE",
	StatusUnsupportedObject:        "UNSUPPORTED_OBJECT",
	StatusInvalidTime:              "INVALID_TIME",
	StatusInvalidIndex:             "INVALID_INDEX",
	StatusInvalidParameter:         "INVALID_PARAMETER",
	StatusFlashWriteLimitExceeded:  "FLASH_WRITE_LIMIT_EXCEEDED",
	StatusInvalidPIDFormat:         "INVALID_PID_FORMAT",
	StatusInvalidPPSFormat:         "INVALID_PPS_FORMAT",
	StatusDisabledByPolicy:         "DISABLED_BY_POLICY",
	StatusInvalidHandle:            "INVALID_HANDLE",
	StatusInvalidPassword:          "INVALID_PASSWORD",
	StatusInvalidRealm:             "INVALID_REALM",
	StatusStorageACLEntryInUse:     "STORAGE_ACL_ENTRY_IN_USE",
	StatusDataMissing:              "DATA_MISSING",
	StatusDuplicate:                "DUPLICATE",
	StatusPKIMissingKeys:           "PKI_MISSING_KEYS",
	StatusPKIGeneratingKeys:        "PKI_GENERATING_KEYS",
	StatusInvalidKey:               "INVALID_KEY",
	StatusInvalidCert:              "INVALID_CERT",
	StatusCertKeyNotMatch:          "CERT_KEY_NOT_MATCH",
	StatusUnsupported:              "UNSUPPORTED",
	StatusNotFound:                 "NOT_FOUND",
	StatusInvalidCredentials:       "INVALID_CREDENTIALS",
	StatusMaxKerbDomainReached:     "MAX_KERB_DOMAIN_REACHED",
	StatusAuditFail:                "AUDIT_FAIL",
}

// String returns the PT_STATUS name, or the number when unknown.
func (s Status) String() string {
	if n, ok := statusNames[s]; ok {
		return n
	}
	return "status " + strconv.FormatUint(uint64(s), 10)
}

func (s Status) Error() string {
	return fmt.Sprintf("wsman: AMT returned %d (%s)", uint32(s), s.String())
}

// MethodError is a method call that returned a non-zero ReturnValue. It
// unwraps to the Status.
type MethodError struct {
	Class  string // "AMT_SetupAndConfigurationService"
	Method string // "CommitChanges"
	Status Status
}

func (e *MethodError) Error() string {
	return fmt.Sprintf("wsman: %s.%s returned %d (%s)", e.Class, e.Method, uint32(e.Status), e.Status.String())
}

func (e *MethodError) Unwrap() error { return e.Status }

// Fault subcodes this package produces and recognises. Compare a received
// fault with errors.Is(err, wsman.ErrInvalidSelectors).
var (
	ErrInvalidSelectors       = &Fault{Subcode: xml.Name{Space: NSWSMan, Local: "InvalidSelectors"}}
	ErrAccessDenied           = &Fault{Subcode: xml.Name{Space: NSWSMan, Local: "AccessDenied"}}
	ErrDestinationUnreachable = &Fault{Subcode: xml.Name{Space: NSAddressing, Local: "DestinationUnreachable"}}
	ErrActionNotSupported     = &Fault{Subcode: xml.Name{Space: NSAddressing, Local: "ActionNotSupported"}}
	ErrInvalidParameter       = &Fault{Subcode: xml.Name{Space: NSWSMan, Local: "InvalidParameter"}}
	ErrInvalidEnumContext     = &Fault{Subcode: xml.Name{Space: NSEnumeration, Local: "InvalidEnumerationContext"}}
	ErrInternal               = &Fault{Subcode: xml.Name{Space: NSWSMan, Local: "InternalError"}}
	ErrSchemaValidation       = &Fault{Subcode: xml.Name{Space: NSWSMan, Local: "SchemaValidationError"}}
	ErrAlreadyExists          = &Fault{Subcode: xml.Name{Space: NSWSMan, Local: "AlreadyExists"}}
)

// Fault codes of SOAP 1.2.
var (
	CodeSender   = xml.Name{Space: NSSOAP, Local: "Sender"}
	CodeReceiver = xml.Name{Space: NSSOAP, Local: "Receiver"}
)

// Fault is a SOAP fault, received by the client or returned by a server
// handler. Two faults match under errors.Is when their subcodes are equal.
type Fault struct {
	Code    xml.Name // soap:Sender or soap:Receiver
	Subcode xml.Name // wsman:InvalidSelectors, wsa:DestinationUnreachable, ...
	Reason  string
	Detail  string // text of the Detail element, if any
	// HTTPStatus is the status the fault came with (client side) or is sent
	// with (server side; 0 → 400 for Sender, 500 for Receiver).
	HTTPStatus int
}

func (f *Fault) Error() string {
	s := "wsman: fault " + f.Subcode.Local
	if f.Subcode.Local == "" {
		s = "wsman: fault " + f.Code.Local
	}
	if f.Reason != "" {
		s += ": " + f.Reason
	}
	return s
}

// Is reports whether target is a *Fault with the same subcode.
func (f *Fault) Is(target error) bool {
	t, ok := target.(*Fault)
	return ok && t.Subcode == f.Subcode
}

// WithReason returns a copy of a sentinel fault with a reason (and optional
// detail) for a server handler to return.
func (f *Fault) WithReason(reason string) *Fault {
	g := *f
	g.Reason = reason
	return &g
}

func (f *Fault) code() xml.Name {
	if f.Code.Local != "" {
		return f.Code
	}
	switch f.Subcode {
	case ErrInternal.Subcode:
		return CodeReceiver
	}
	return CodeSender
}

func (f *Fault) status() int {
	if f.HTTPStatus != 0 {
		return f.HTTPStatus
	}
	if f.code() == CodeReceiver {
		return 500
	}
	return 400
}

// parseFault reads a soap:Fault element.
func parseFault(e *Element) *Fault {
	f := &Fault{}
	if c := e.Child("Code"); c != nil {
		if v := c.Child("Value"); v != nil {
			f.Code = v.resolveQName(v.Text)
		}
		if sc := c.Child("Subcode"); sc != nil {
			if v := sc.Child("Value"); v != nil {
				f.Subcode = v.resolveQName(v.Text)
			}
		}
	}
	if r := e.Child("Reason"); r != nil {
		f.Reason = r.ChildText("Text")
	}
	if d := e.Child("Detail"); d != nil {
		f.Detail = d.Text
		if f.Detail == "" {
			for _, c := range d.Children {
				if c.Text != "" {
					f.Detail = c.Text
					break
				}
			}
		}
	}
	return f
}

// ErrUnauthorized is returned when the device still answers 401 after the
// Digest retry: wrong user name or password, or a realm the password was
// not set for.
var ErrUnauthorized = errors.New("wsman: unauthorized (HTTP 401)")

// HTTPError is a reply that is neither 200 nor a SOAP fault.
type HTTPError struct {
	StatusCode int
	Status     string
}

func (e *HTTPError) Error() string { return "wsman: unexpected HTTP status " + e.Status }
