package heci

import (
	"encoding/binary"
	"fmt"
	"io"
)

// FrameType is the type byte of a stream frame (specs/heci.md §5).
type FrameType uint8

// Frame types of specs/heci.md §5.
const (
	FrameConnect    FrameType = 1 // host → ME: payload 16 GUID bytes
	FrameConnected  FrameType = 2 // ME → host: u32 max_msg_length, u8 protocol_version
	FrameError      FrameType = 3 // ME → host: u32 errno (25 ENOTTY, 16 EBUSY, 19 ENODEV)
	FrameMessage    FrameType = 4 // either way: one MEI message
	FrameDisconnect FrameType = 5 // either way: the channel is closed
	FrameReset      FrameType = 6 // ME → host: the link reset, reconnect needed
)

func (t FrameType) String() string {
	switch t {
	case FrameConnect:
		return "connect"
	case FrameConnected:
		return "connected"
	case FrameError:
		return "error"
	case FrameMessage:
		return "message"
	case FrameDisconnect:
		return "disconnect"
	case FrameReset:
		return "reset"
	}
	return fmt.Sprintf("type %d", uint8(t))
}

// MaxFramePayload bounds the payload of one frame; a longer length field
// is a format error, so a peer cannot make us allocate more.
const MaxFramePayload = 1 << 16

// Frame is one frame of the stream framing: u32 length (LE, of what
// follows), u8 type, u8 channel, payload (specs/heci.md §5).
type Frame struct {
	Type    FrameType
	Channel uint8
	Payload []byte
}

// AppendFrame appends the encoding of f to b.
func AppendFrame(b []byte, f Frame) []byte {
	b = binary.LittleEndian.AppendUint32(b, uint32(2+len(f.Payload))) // length of type+channel+payload
	b = append(b, byte(f.Type), f.Channel)
	return append(b, f.Payload...)
}

// FrameFormatError describes a malformed frame. It matches [ErrFormat].
type FrameFormatError struct {
	Field string
	Value uint64
	Why   string
}

func (e *FrameFormatError) Error() string {
	return fmt.Sprintf("heci: malformed frame: %s = %d: %s", e.Field, e.Value, e.Why)
}
func (e *FrameFormatError) Unwrap() error { return ErrFormat }

// ReadFrame reads one frame from r. The payload is a fresh slice.
// io.EOF is returned only at a frame boundary.
func ReadFrame(r io.Reader) (Frame, error) {
	var hdr [6]byte
	if _, err := io.ReadFull(r, hdr[:4]); err != nil {
		return Frame{}, err
	}
	n := binary.LittleEndian.Uint32(hdr[0:4])
	if n < 2 {
		return Frame{}, &FrameFormatError{Field: "length", Value: uint64(n), Why: "shorter than type and channel"}
	}
	if n-2 > MaxFramePayload {
		return Frame{}, &FrameFormatError{Field: "length", Value: uint64(n), Why: fmt.Sprintf("payload over %d bytes", MaxFramePayload)}
	}
	if _, err := io.ReadFull(r, hdr[4:6]); err != nil {
		return Frame{}, noEOF(err)
	}
	f := Frame{Type: FrameType(hdr[4]), Channel: hdr[5], Payload: make([]byte, n-2)}
	if _, err := io.ReadFull(r, f.Payload); err != nil {
		return Frame{}, noEOF(err)
	}
	return f, nil
}

func noEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// ParseFrame decodes exactly one frame from b.
func ParseFrame(b []byte) (Frame, error) {
	if len(b) < 6 {
		return Frame{}, &FrameFormatError{Field: "frame size", Value: uint64(len(b)), Why: "need at least 6 bytes"}
	}
	n := binary.LittleEndian.Uint32(b[0:4])
	if uint64(n) != uint64(len(b)-4) {
		return Frame{}, &FrameFormatError{Field: "length", Value: uint64(n), Why: fmt.Sprintf("frame has %d bytes after the length", len(b)-4)}
	}
	if n-2 > MaxFramePayload {
		return Frame{}, &FrameFormatError{Field: "length", Value: uint64(n), Why: fmt.Sprintf("payload over %d bytes", MaxFramePayload)}
	}
	return Frame{Type: FrameType(b[4]), Channel: b[5], Payload: append([]byte{}, b[6:]...)}, nil
}

// ConnectedPayload is the payload of a connected frame.
type ConnectedPayload struct {
	MaxMessageLen   uint32 // 0x00, 4 bytes, specs/heci.md §5
	ProtocolVersion uint8  // 0x04, 1 byte
}

// AppendBinary appends the 5-byte encoding.
func (p ConnectedPayload) AppendBinary(b []byte) ([]byte, error) {
	b = binary.LittleEndian.AppendUint32(b, p.MaxMessageLen)
	return append(b, p.ProtocolVersion), nil
}

// ParseConnectedPayload decodes a connected frame's payload.
func ParseConnectedPayload(b []byte) (ConnectedPayload, error) {
	if len(b) != 5 {
		return ConnectedPayload{}, &FrameFormatError{Field: "connected payload size", Value: uint64(len(b)), Why: "want 5"}
	}
	return ConnectedPayload{
		MaxMessageLen:   binary.LittleEndian.Uint32(b[0:4]), // 0x00, 4 bytes, §5
		ProtocolVersion: b[4],                               // 0x04, 1 byte, §5
	}, nil
}

// ParseErrorPayload decodes an error frame's payload (u32 errno).
func ParseErrorPayload(b []byte) (Errno, error) {
	if len(b) != 4 {
		return 0, &FrameFormatError{Field: "error payload size", Value: uint64(len(b)), Why: "want 4"}
	}
	return Errno(binary.LittleEndian.Uint32(b)), nil // 0x00, 4 bytes, §5
}

// ParseConnectPayload decodes a connect frame's payload (16 GUID bytes).
func ParseConnectPayload(b []byte) (GUID, error) {
	var g GUID
	if len(b) != 16 {
		return g, &FrameFormatError{Field: "connect payload size", Value: uint64(len(b)), Why: "want 16"}
	}
	copy(g[:], b)
	return g, nil
}
