package tlspsk

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Handshake message types (RFC 5246 §7.4, RFC 4279 §2).
const (
	typeHelloRequest      uint8  = 0
	typeClientHello       uint8  = 1
	typeServerHello       uint8  = 2
	typeServerKeyExchange uint8  = 12
	typeServerHelloDone   uint8  = 14
	typeClientKeyExchange uint8  = 16
	typeFinished          uint8  = 20
	handshakeHeaderLen           = 4
	maxHandshakeLen              = 1 << 16 // far above any ClientHello we expect
	extRenegotiationInfo  uint16 = 0xFF01  // RFC 5746 §3.2
)

// errDecode is wrapped by every message parse error; the handshake answers
// it with alert decode_error.
var errDecode = errors.New("tlspsk: malformed handshake message")

// reader is a bounds-checked cursor over a message body.
type reader struct {
	b   []byte
	err error
	msg string
}

func (r *reader) fail(field string) {
	if r.err == nil {
		r.err = fmt.Errorf("%w: %s: %s truncated or too long", errDecode, r.msg, field)
	}
	r.b = nil
}

func (r *reader) bytes(n int, field string) []byte {
	if r.err != nil || n < 0 || n > len(r.b) {
		r.fail(field)
		return nil
	}
	p := r.b[:n:n]
	r.b = r.b[n:]
	return p
}

func (r *reader) u8(field string) uint8 {
	p := r.bytes(1, field)
	if p == nil {
		return 0
	}
	return p[0]
}

func (r *reader) u16(field string) uint16 {
	p := r.bytes(2, field)
	if p == nil {
		return 0
	}
	return binary.BigEndian.Uint16(p)
}

func (r *reader) vec8(field string) []byte  { return r.bytes(int(r.u8(field)), field) }
func (r *reader) vec16(field string) []byte { return r.bytes(int(r.u16(field)), field) }

func (r *reader) done() error {
	if r.err == nil && len(r.b) != 0 {
		r.err = fmt.Errorf("%w: %s: %d trailing bytes", errDecode, r.msg, len(r.b))
	}
	return r.err
}

func appendVec8(b, v []byte) []byte { return append(append(b, uint8(len(v))), v...) }
func appendVec16(b, v []byte) []byte {
	return append(binary.BigEndian.AppendUint16(b, uint16(len(v))), v...)
}

// handshakeHeader appends a handshake message header for body and body itself.
func appendHandshake(b []byte, typ uint8, body []byte) []byte {
	n := len(body)
	b = append(b, typ, byte(n>>16), byte(n>>8), byte(n))
	return append(b, body...)
}

// extension is one hello extension; we keep type and data verbatim.
type extension struct {
	Type uint16
	Data []byte
}

func parseExtensions(r *reader) []extension {
	if len(r.b) == 0 {
		return nil // extensions absent (RFC 5246 §7.4.1.2)
	}
	er := &reader{b: r.vec16("extensions"), msg: r.msg}
	var exts []extension
	for len(er.b) > 0 && er.err == nil {
		t := er.u16("extension type")
		d := er.vec16("extension data")
		exts = append(exts, extension{Type: t, Data: d})
	}
	if er.err != nil && r.err == nil {
		r.err = er.err
	}
	if exts == nil {
		exts = []extension{} // present but empty
	}
	return exts
}

func appendExtensions(b []byte, exts []extension) []byte {
	if exts == nil {
		return b
	}
	var e []byte
	for _, x := range exts {
		e = binary.BigEndian.AppendUint16(e, x.Type)
		e = appendVec16(e, x.Data)
	}
	return appendVec16(b, e)
}

// clientHello is RFC 5246 §7.4.1.2.
type clientHello struct {
	Version      uint16
	Random       []byte
	SessionID    []byte
	CipherSuites []uint16
	Compression  []uint8
	Extensions   []extension // nil when absent
}

func (m *clientHello) marshal() []byte {
	b := binary.BigEndian.AppendUint16(nil, m.Version)
	b = append(b, m.Random...)
	b = appendVec8(b, m.SessionID)
	var cs []byte
	for _, s := range m.CipherSuites {
		cs = binary.BigEndian.AppendUint16(cs, s)
	}
	b = appendVec16(b, cs)
	b = appendVec8(b, m.Compression)
	b = appendExtensions(b, m.Extensions)
	return appendHandshake(nil, typeClientHello, b)
}

func parseClientHello(body []byte) (*clientHello, error) {
	r := &reader{b: body, msg: "ClientHello"}
	m := &clientHello{}
	m.Version = r.u16("client_version")
	m.Random = r.bytes(randomLen, "random")
	m.SessionID = r.vec8("session_id")
	if len(m.SessionID) > 32 {
		r.fail("session_id")
	}
	cs := r.vec16("cipher_suites")
	if len(cs) < 2 || len(cs)%2 != 0 {
		r.fail("cipher_suites")
	}
	m.CipherSuites = make([]uint16, 0, len(cs)/2)
	for i := 0; i+1 < len(cs); i += 2 {
		m.CipherSuites = append(m.CipherSuites, binary.BigEndian.Uint16(cs[i:]))
	}
	m.Compression = r.vec8("compression_methods")
	if len(m.Compression) == 0 {
		r.fail("compression_methods")
	}
	m.Extensions = parseExtensions(r)
	if err := r.done(); err != nil {
		return nil, err
	}
	return m, nil
}

// serverHello is RFC 5246 §7.4.1.3.
type serverHello struct {
	Version     uint16
	Random      []byte
	SessionID   []byte
	CipherSuite uint16
	Compression uint8
	Extensions  []extension
}

func (m *serverHello) marshal() []byte {
	b := binary.BigEndian.AppendUint16(nil, m.Version)
	b = append(b, m.Random...)
	b = appendVec8(b, m.SessionID)
	b = binary.BigEndian.AppendUint16(b, m.CipherSuite)
	b = append(b, m.Compression)
	b = appendExtensions(b, m.Extensions)
	return appendHandshake(nil, typeServerHello, b)
}

func parseServerHello(body []byte) (*serverHello, error) {
	r := &reader{b: body, msg: "ServerHello"}
	m := &serverHello{}
	m.Version = r.u16("server_version")
	m.Random = r.bytes(randomLen, "random")
	m.SessionID = r.vec8("session_id")
	if len(m.SessionID) > 32 {
		r.fail("session_id")
	}
	m.CipherSuite = r.u16("cipher_suite")
	m.Compression = r.u8("compression_method")
	m.Extensions = parseExtensions(r)
	if err := r.done(); err != nil {
		return nil, err
	}
	return m, nil
}

// pskMessage is the PSK ServerKeyExchange (psk_identity_hint) or
// ClientKeyExchange (psk_identity) of RFC 4279 §2: one opaque<0..2^16-1>.
type pskMessage struct {
	typ   uint8
	Value []byte
}

func (m *pskMessage) marshal() []byte {
	return appendHandshake(nil, m.typ, appendVec16(nil, m.Value))
}

func parsePSKMessage(typ uint8, body []byte) (*pskMessage, error) {
	name := "ServerKeyExchange"
	if typ == typeClientKeyExchange {
		name = "ClientKeyExchange"
	}
	r := &reader{b: body, msg: name}
	m := &pskMessage{typ: typ, Value: r.vec16("psk_identity")}
	if err := r.done(); err != nil {
		return nil, err
	}
	return m, nil
}

func parseFinished(body []byte) ([]byte, error) {
	if len(body) != finishedLen {
		return nil, fmt.Errorf("%w: Finished: verify_data is %d bytes, want %d", errDecode, len(body), finishedLen)
	}
	return body, nil
}

// renegotiationInfoOK reports whether exts hold no renegotiation_info or an
// empty one (RFC 5746 §3.4, initial handshake), and whether it was present.
func renegotiationInfo(exts []extension) (present, ok bool) {
	for _, e := range exts {
		if e.Type == extRenegotiationInfo {
			if present {
				return true, false
			}
			present = true
			ok = len(e.Data) == 1 && e.Data[0] == 0
			if !ok {
				return true, false
			}
		}
	}
	return present, !present || ok
}
