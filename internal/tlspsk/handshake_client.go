package tlspsk

import (
	"crypto/hmac"
	"errors"
	"fmt"
	"io"
	"slices"
)

// clientHandshake runs RFC 5246 §7.3 for plain PSK (RFC 4279 §2):
//
//	ClientHello            -->
//	                       <--  ServerHello, [ServerKeyExchange(hint)], ServerHelloDone
//	ClientKeyExchange(id), ChangeCipherSpec, Finished -->
//	                       <--  ChangeCipherSpec, Finished
func (c *Conn) clientHandshake() error {
	cfg := c.config
	if err := cfg.check(true); err != nil {
		return err
	}
	minV, maxV := cfg.minVersion(), cfg.maxVersion()
	var offered []*suite
	for _, s := range cfg.suites() {
		if s.minVersion <= maxV {
			offered = append(offered, s)
		}
	}
	if len(offered) == 0 {
		return fmt.Errorf("tlspsk: config: no suite for %s: %w", VersionName(maxV), ErrNoCipherSuite)
	}
	hello := &clientHello{
		Version:     maxV,
		Random:      make([]byte, randomLen),
		Compression: []uint8{0},
	}
	if _, err := io.ReadFull(cfg.rand(), hello.Random); err != nil {
		return fmt.Errorf("tlspsk handshake: reading random: %w", err)
	}
	for _, s := range offered {
		hello.CipherSuites = append(hello.CipherSuites, s.id)
	}
	hello.CipherSuites = append(hello.CipherSuites, scsvRenegotiation)

	// The ClientHello goes out in a TLS 1.0 record whatever we offer, as
	// old servers expect (RFC 5246 Appendix E.1).
	c.out.version = VersionTLS10
	if err := c.writeHandshake(hello.marshal()); err != nil {
		return fmt.Errorf("tlspsk handshake: sending ClientHello: %w", err)
	}
	if err := c.flush(); err != nil {
		return fmt.Errorf("tlspsk handshake: sending ClientHello: %w", err)
	}

	// ServerHello.
	typ, msg, err := c.readHandshake()
	if err != nil {
		return fmt.Errorf("tlspsk handshake: reading ServerHello: %w", err)
	}
	if typ != typeServerHello {
		return c.sendFatal(alertUnexpectedMessage, fmt.Errorf("tlspsk handshake: got message type %d, want ServerHello", typ))
	}
	sh, err := parseServerHello(msg[handshakeHeaderLen:])
	if err != nil {
		return c.sendFatal(alertDecodeError, fmt.Errorf("tlspsk handshake: %w", err))
	}
	if sh.Version < minV || sh.Version > maxV {
		// Send the alert in the version the server chose, if it is one.
		if sh.Version>>8 == 3 {
			c.out.version = sh.Version
		}
		return c.sendFatal(alertProtocolVersion, fmt.Errorf("tlspsk handshake: server chose %s, we accept %s..%s: %w",
			VersionName(sh.Version), VersionName(minV), VersionName(maxV), ErrVersion))
	}
	c.vers = sh.Version
	c.in.version, c.out.version = c.vers, c.vers
	i := slices.IndexFunc(offered, func(s *suite) bool { return s.id == sh.CipherSuite })
	if i < 0 || offered[i].minVersion > c.vers {
		return c.sendFatal(alertIllegalParameter, fmt.Errorf("tlspsk handshake: server chose suite %s, which we did not offer for %s",
			CipherSuiteName(sh.CipherSuite), VersionName(c.vers)))
	}
	c.suite = offered[i]
	if sh.Compression != 0 {
		return c.sendFatal(alertIllegalParameter, fmt.Errorf("tlspsk handshake: server chose compression %d", sh.Compression))
	}
	for _, e := range sh.Extensions {
		if e.Type != extRenegotiationInfo {
			return c.sendFatal(alertUnsupportedExtension, fmt.Errorf("tlspsk handshake: server sent extension 0x%04X we did not offer", e.Type))
		}
	}
	if _, ok := renegotiationInfo(sh.Extensions); !ok {
		return c.sendFatal(alertHandshakeFailure, errors.New("tlspsk handshake: bad renegotiation_info in ServerHello"))
	}
	c.transcript = append(c.transcript, msg...)

	// Optional ServerKeyExchange, then ServerHelloDone.
	typ, msg, err = c.readHandshake()
	if err != nil {
		return fmt.Errorf("tlspsk handshake: reading ServerHelloDone: %w", err)
	}
	if typ == typeServerKeyExchange {
		ske, err := parsePSKMessage(typ, msg[handshakeHeaderLen:])
		if err != nil {
			return c.sendFatal(alertDecodeError, fmt.Errorf("tlspsk handshake: %w", err))
		}
		c.hint = string(ske.Value)
		c.transcript = append(c.transcript, msg...)
		typ, msg, err = c.readHandshake()
		if err != nil {
			return fmt.Errorf("tlspsk handshake: reading ServerHelloDone: %w", err)
		}
	}
	if typ != typeServerHelloDone {
		return c.sendFatal(alertUnexpectedMessage, fmt.Errorf("tlspsk handshake: got message type %d, want ServerHelloDone", typ))
	}
	if len(msg) != handshakeHeaderLen {
		return c.sendFatal(alertDecodeError, fmt.Errorf("%w: ServerHelloDone has a %d-byte body", errDecode, len(msg)-handshakeHeaderLen))
	}
	c.transcript = append(c.transcript, msg...)

	// Choose the identity and key for the hint.
	identity, key, err := cfg.Identity(c.hint)
	if err != nil {
		_ = c.sendFatal(alertHandshakeFailure, nil)
		return fmt.Errorf("tlspsk handshake: choosing the PSK identity for hint %q: %w", c.hint, err)
	}
	if len(identity) > 0xFFFF || len(key) == 0 || len(key) > 0xFFFF {
		_ = c.sendFatal(alertInternalError, nil)
		return fmt.Errorf("tlspsk handshake: Identity callback returned a %d-byte identity and a %d-byte key (want ≤ 65535 and 1..65535)", len(identity), len(key))
	}
	c.identity = identity

	premaster := pskPremaster(key)
	master := masterSecret(c.vers, premaster, hello.Random, sh.Random)
	clear(premaster)
	defer clear(master)
	if cfg.testHookMaster != nil {
		cfg.testHookMaster(hello.Random, sh.Random, master)
	}
	keys := expandKeys(c.vers, c.suite, master, hello.Random, sh.Random)
	if c.out.next, err = newCipherState(c.vers, c.suite, keys.clientMAC, keys.clientKey, keys.clientIV, true); err != nil {
		return fmt.Errorf("tlspsk handshake: %w", err)
	}
	if c.in.next, err = newCipherState(c.vers, c.suite, keys.serverMAC, keys.serverKey, keys.serverIV, false); err != nil {
		return fmt.Errorf("tlspsk handshake: %w", err)
	}

	cke := &pskMessage{typ: typeClientKeyExchange, Value: []byte(identity)}
	if err := c.writeHandshake(cke.marshal()); err != nil {
		return fmt.Errorf("tlspsk handshake: sending ClientKeyExchange: %w", err)
	}
	if err := c.writeCCS(); err != nil {
		return fmt.Errorf("tlspsk handshake: sending ChangeCipherSpec: %w", err)
	}
	fin := appendHandshake(nil, typeFinished, finishedSum(c.vers, master, "client finished", c.transcript))
	if err := c.writeHandshake(fin); err != nil {
		return fmt.Errorf("tlspsk handshake: sending Finished: %w", err)
	}
	if err := c.flush(); err != nil {
		return fmt.Errorf("tlspsk handshake: sending Finished: %w", err)
	}

	// The server's ChangeCipherSpec and Finished. A wrong key shows here:
	// the server cannot check our Finished and sends bad_record_mac, or we
	// cannot check its Finished.
	c.expectCCS = true
	typ, msg, err = c.readHandshake()
	if err != nil {
		return badKey("tlspsk handshake: reading the server's Finished", err)
	}
	if typ != typeFinished || c.expectCCS {
		return c.sendFatal(alertUnexpectedMessage, fmt.Errorf("tlspsk handshake: got message type %d, want ChangeCipherSpec and Finished", typ))
	}
	got, err := parseFinished(msg[handshakeHeaderLen:])
	if err != nil {
		return c.sendFatal(alertDecodeError, fmt.Errorf("tlspsk handshake: %w", err))
	}
	if want := finishedSum(c.vers, master, "server finished", c.transcript); !hmac.Equal(got, want) {
		return c.sendFatal(alertDecryptError, fmt.Errorf("tlspsk handshake: server Finished does not verify: %w", ErrBadKey))
	}
	return nil
}

// badKey wraps err with ErrBadKey when it is a bad_record_mac or
// decrypt_error alert (sent or received) at Finished.
func badKey(op string, err error) error {
	var ae *AlertError
	if errors.As(err, &ae) && (alert(ae.Description) == alertBadRecordMAC || alert(ae.Description) == alertDecryptError) {
		return fmt.Errorf("%s: %w (%w)", op, ErrBadKey, err)
	}
	return fmt.Errorf("%s: %w", op, err)
}
