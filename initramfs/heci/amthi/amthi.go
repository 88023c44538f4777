// Package amthi is the AMT host interface ("PTHI") of the Intel ME: the
// typed commands of specs/heci.md §3 sent over a [heci.Transport] connected
// to [heci.AMTHIClient].
//
// Each command is a struct of request fields with an Execute method that
// returns its response struct, like go-tpm's tpm2 commands:
//
//	st, err := amthi.GetProvisioningState{}.Execute(ctx, t)
//
// A response whose status is not SUCCESS is an error wrapping its
// [Status], so callers write errors.Is(err, amthi.StatusNotReady). A
// response that breaks the layout is a [*ProtocolError] naming the command
// and the offending value; it matches [ErrProtocol].
//
// The encoders (AppendBody, DecodeBody, MarshalResponse, ParseRequest) are
// exported for the ME simulator in internal/amtsim.
package amthi

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/provstick/provstick/initramfs/heci"
)

// Command is an AMTHI command code (specs/heci.md §3).
type Command uint32

// The command codes of specs/heci.md §3.
const (
	CmdGetProvisioningMode             Command = 0x04000008
	CmdUnprovision                     Command = 0x04000010
	CmdGetProvisioningState            Command = 0x04000011
	CmdGetCodeVersions                 Command = 0x0400001A
	CmdGetSecurityParameters           Command = 0x0400001B
	CmdGetMACAddresses                 Command = 0x04000025
	CmdStartConfiguration              Command = 0x04000029
	CmdSetProvisioningServerOTP        Command = 0x0400002A
	CmdGetProvisioningTLSMode          Command = 0x0400002B
	CmdEnumerateHashHandles            Command = 0x0400002C
	CmdGetCertHashEntry                Command = 0x0400002D
	CmdSetDNSSuffix                    Command = 0x0400002F
	CmdGetZeroTouchEnabled             Command = 0x04000030
	CmdGetPKIFQDNSuffix                Command = 0x04000036
	CmdGetRemoteAccessConnectionStatus Command = 0x04000046
	CmdGetLANInterfaceSettings         Command = 0x04000048
	CmdGetUUID                         Command = 0x0400005C
	CmdStopConfiguration               Command = 0x0400005E
	CmdGetLocalSystemAccount           Command = 0x04000067
	CmdGetControlMode                  Command = 0x0400006B
)

// ResponseBit is set in the command code of every response (§3).
const ResponseBit Command = 0x00800000

var commandNames = map[Command]string{
	CmdGetProvisioningMode:             "GetProvisioningMode",
	CmdUnprovision:                     "Unprovision",
	CmdGetProvisioningState:            "GetProvisioningState",
	CmdGetCodeVersions:                 "GetCodeVersions",
	CmdGetSecurityParameters:           "GetSecurityParameters",
	CmdGetMACAddresses:                 "GetMACAddresses",
	CmdStartConfiguration:              "StartConfiguration",
	CmdSetProvisioningServerOTP:        "SetProvisioningServerOTP",
	CmdGetProvisioningTLSMode:          "GetProvisioningTLSMode",
	CmdEnumerateHashHandles:            "EnumerateHashHandles",
	CmdGetCertHashEntry:                "GetCertHashEntry",
	CmdSetDNSSuffix:                    "SetDnsSuffix",
	CmdGetZeroTouchEnabled:             "GetZeroTouchEnabled",
	CmdGetPKIFQDNSuffix:                "GetPKIFQDNSuffix",
	CmdGetRemoteAccessConnectionStatus: "GetRemoteAccessConnectionStatus",
	CmdGetLANInterfaceSettings:         "GetLANInterfaceSettings",
	CmdGetUUID:                         "GetUUID",
	CmdStopConfiguration:               "StopConfiguration",
	CmdGetLocalSystemAccount:           "GetLocalSystemAccount",
	CmdGetControlMode:                  "GetControlMode",
}

// String is the spec's name, or the code in hex.
func (c Command) String() string {
	if n, ok := commandNames[c&^ResponseBit]; ok {
		if c&ResponseBit != 0 {
			return n + " response"
		}
		return n
	}
	return fmt.Sprintf("command 0x%08X", uint32(c))
}

// HeaderLen is the size of the message header; a response also carries a
// u32 status, so its body starts at ResponseBodyOffset (§3).
const (
	HeaderLen          = 12
	ResponseBodyOffset = 16
)

// Header is the 12-byte message header of §3.
type Header struct {
	Major    uint8   // 0x00, 1 byte, always 1
	Minor    uint8   // 0x01, 1 byte, always 1
	Reserved uint16  // 0x02, 2 bytes, 0
	Command  Command // 0x04, 4 bytes
	Length   uint32  // 0x08, 4 bytes: bytes after the header
}

func appendHeader(b []byte, cmd Command, length int) []byte {
	b = append(b, 1, 1, 0, 0)                                  // major, minor, reserved
	b = binary.LittleEndian.AppendUint32(b, uint32(cmd))       // 0x04
	return binary.LittleEndian.AppendUint32(b, uint32(length)) // 0x08
}

func headerFromBytes(b []byte) Header {
	return Header{
		Major:    b[0],                                        // 0x00, 1 byte, §3
		Minor:    b[1],                                        // 0x01, 1 byte, §3
		Reserved: binary.LittleEndian.Uint16(b[2:4]),          // 0x02, 2 bytes, §3
		Command:  Command(binary.LittleEndian.Uint32(b[4:8])), // 0x04, 4 bytes, §3
		Length:   binary.LittleEndian.Uint32(b[8:12]),         // 0x08, 4 bytes, §3
	}
}

// Request is a command's request: its code and body.
type Request interface {
	Command() Command
	// AppendBody appends the request body (after the header).
	AppendBody(b []byte) []byte
}

// Response is a command's response body (after the status).
type Response interface {
	AppendBody(b []byte) []byte
	// DecodeBody parses the body; cmd names the command in errors.
	DecodeBody(cmd Command, b []byte) error
}

// MarshalRequest encodes a whole request message.
func MarshalRequest(r Request) []byte {
	body := r.AppendBody(nil)
	return append(appendHeader(make([]byte, 0, HeaderLen+len(body)), r.Command(), len(body)), body...)
}

// ParseRequest checks a request message's header and returns it with the
// body. It is what the ME side does with a request.
func ParseRequest(b []byte) (Header, []byte, error) {
	if len(b) < HeaderLen {
		return Header{}, nil, &ProtocolError{Field: "request length", Got: uint64(len(b)), Want: HeaderLen, Why: "shorter than the header"}
	}
	h := headerFromBytes(b)
	switch {
	case h.Major != 1 || h.Minor != 1:
		return h, nil, &ProtocolError{Command: h.Command, Field: "version", Got: uint64(h.Major)<<8 | uint64(h.Minor), Want: 0x0101, Why: "want 1.1"}
	case h.Reserved != 0:
		return h, nil, &ProtocolError{Command: h.Command, Field: "reserved", Got: uint64(h.Reserved), Want: 0}
	case uint64(h.Length) != uint64(len(b)-HeaderLen):
		return h, nil, &ProtocolError{Command: h.Command, Field: "length", Got: uint64(h.Length), Want: uint64(len(b) - HeaderLen), Why: "does not match the message size"}
	}
	return h, b[HeaderLen:], nil
}

// MarshalResponse encodes a whole response message for cmd (the request's
// code; the response bit is added). A nil r or a failing status sends no
// body.
func MarshalResponse(cmd Command, st Status, r Response) []byte {
	var body []byte
	if r != nil && st == StatusSuccess {
		body = r.AppendBody(nil)
	}
	b := appendHeader(make([]byte, 0, ResponseBodyOffset+len(body)), cmd|ResponseBit, 4+len(body))
	b = binary.LittleEndian.AppendUint32(b, uint32(st)) // 0x0C, 4 bytes, status
	return append(b, body...)
}

// UnmarshalResponse checks a whole response message to cmd the way
// Intel's sample does (n ≥ 16, n == length+12, command, reserved, major,
// then status, §3) and decodes its body into r (which may be nil for
// commands without one).
func UnmarshalResponse(b []byte, cmd Command, r Response) error {
	if len(b) < ResponseBodyOffset {
		return &ProtocolError{Command: cmd, Field: "response length", Got: uint64(len(b)), Want: ResponseBodyOffset, Why: "shorter than header and status"}
	}
	h := headerFromBytes(b)
	switch {
	case uint64(h.Length) != uint64(len(b)-HeaderLen):
		return &ProtocolError{Command: cmd, Field: "length field", Got: uint64(h.Length), Want: uint64(len(b) - HeaderLen), Why: "does not match the response size"}
	case h.Command != cmd|ResponseBit:
		return &ProtocolError{Command: cmd, Field: "command", Got: uint64(h.Command), Want: uint64(cmd | ResponseBit), Why: "wrong command code", Hex: true}
	case h.Reserved != 0:
		return &ProtocolError{Command: cmd, Field: "reserved", Got: uint64(h.Reserved), Want: 0}
	case h.Major != 1:
		return &ProtocolError{Command: cmd, Field: "major version", Got: uint64(h.Major), Want: 1}
	}
	st := Status(binary.LittleEndian.Uint32(b[12:16])) // 0x0C, 4 bytes, §3
	if st != StatusSuccess {
		return fmt.Errorf("amthi: %v: %w", cmd, st)
	}
	body := b[ResponseBodyOffset:]
	if r == nil {
		if len(body) != 0 {
			return &ProtocolError{Command: cmd, Field: "body length", Got: uint64(len(body)), Want: 0}
		}
		return nil
	}
	return r.DecodeBody(cmd, body)
}

// roundTrip sends req and decodes the reply into resp.
func roundTrip(ctx context.Context, t heci.Transport, req Request, resp Response) error {
	out, err := t.Send(ctx, MarshalRequest(req))
	if err != nil {
		return fmt.Errorf("amthi: %v: %w", req.Command(), err)
	}
	return UnmarshalResponse(out, req.Command(), resp)
}

// execute runs a command whose response is R.
func execute[R any, PR interface {
	*R
	Response
}](ctx context.Context, t heci.Transport, req Request) (*R, error) {
	var r R
	if err := roundTrip(ctx, t, req, PR(&r)); err != nil {
		return nil, err
	}
	return &r, nil
}

// ErrProtocol: a message broke the layout of specs/heci.md §3.
var ErrProtocol = errors.New("amthi: protocol error")

// ProtocolError names the command, the field and the values of a broken
// message. It matches [ErrProtocol].
type ProtocolError struct {
	Command Command
	Field   string
	Got     uint64
	Want    uint64
	Why     string
	Hex     bool // print the values in hex (command codes)
}

func (e *ProtocolError) Error() string {
	var s string
	if e.Hex {
		s = fmt.Sprintf("amthi: %v: %s 0x%08X, want 0x%08X", e.Command, e.Field, e.Got, e.Want)
	} else {
		s = fmt.Sprintf("amthi: %v: %s %d, want %d", e.Command, e.Field, e.Got, e.Want)
	}
	if e.Why != "" {
		s += " (" + e.Why + ")"
	}
	return s
}
func (e *ProtocolError) Unwrap() error { return ErrProtocol }

// Status is the u32 status of a response (§3). It is an error; compare
// with errors.Is(err, amthi.StatusNotReady).
type Status uint32

// The status values a client must name (§3).
const (
	StatusSuccess                  Status = 0
	StatusInternalError            Status = 1
	StatusNotReady                 Status = 2 // retry
	StatusInvalidAMTMode           Status = 3
	StatusInvalidMessageLength     Status = 4
	StatusNotPermitted             Status = 0x10
	StatusMaxLimitReached          Status = 0x17
	StatusAuthenticationFailed     Status = 0x19
	StatusInvalidProvisioningState Status = 0x20
	StatusInvalidParameter         Status = 0x24
	StatusFlashWriteLimitExceeded  Status = 0x26
	StatusInvalidPIDFormat         Status = 0x2A
	StatusInvalidPPSFormat         Status = 0x2B
	StatusCertificateNotReady      Status = 0x31
	StatusDisabledByPolicy         Status = 0x400
	StatusInvalidHandle            Status = 0x805
	StatusInvalidPassword          Status = 0x806
	StatusDataMissing              Status = 0x809
	StatusDuplicate                Status = 0x80A
	StatusUnsupported              Status = 0x812
	StatusNotFound                 Status = 0x814
	StatusBlockingComponent        Status = 0x81C
)

var statusNames = map[Status]string{
	StatusSuccess:                  "SUCCESS",
	StatusInternalError:            "INTERNAL_ERROR",
	StatusNotReady:                 "NOT_READY",
	StatusInvalidAMTMode:           "INVALID_AMT_MODE",
	StatusInvalidMessageLength:     "INVALID_MESSAGE_LENGTH",
	StatusNotPermitted:             "NOT_PERMITTED",
	StatusMaxLimitReached:          "MAX_LIMIT_REACHED",
	StatusAuthenticationFailed:     "AUTHENTICATION_FAILED",
	StatusInvalidProvisioningState: "INVALID_PROVISIONING_STATE",
	StatusInvalidParameter:         "INVALID_PARAMETER",
	StatusFlashWriteLimitExceeded:  "FLASH_WRITE_LIMIT_EXCEEDED",
	StatusInvalidPIDFormat:         "INVALID_PID_FORMAT",
	StatusInvalidPPSFormat:         "INVALID_PPS_FORMAT",
	StatusCertificateNotReady:      "CERTIFICATE_NOT_READY",
	StatusDisabledByPolicy:         "DISABLED_BY_POLICY",
	StatusInvalidHandle:            "INVALID_HANDLE",
	StatusInvalidPassword:          "INVALID_PASSWORD",
	StatusDataMissing:              "DATA_MISSING",
	StatusDuplicate:                "DUPLICATE",
	StatusUnsupported:              "UNSUPPORTED",
	StatusNotFound:                 "NOT_FOUND",
	StatusBlockingComponent:        "BLOCKING_COMPONENT",
}

// Name is the spec's name, or "" for a value the spec does not list.
func (s Status) Name() string { return statusNames[s] }

func (s Status) Error() string {
	if n, ok := statusNames[s]; ok {
		return fmt.Sprintf("AMT status %s (0x%X)", n, uint32(s))
	}
	return fmt.Sprintf("AMT status 0x%X", uint32(s))
}
