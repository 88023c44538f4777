package tlspsk

import (
	"crypto/hmac"
	"errors"
	"fmt"
	"io"
	"slices"
)

// serverHandshake is the server side of clientHandshake.
func (c *Conn) serverHandshake() error {
	cfg := c.config
	if err := cfg.check(false); err != nil {
		return err
	}
	minV, maxV := cfg.minVersion(), cfg.maxVersion()

	typ, msg, err := c.readHandshake()
	if err != nil {
		return fmt.Errorf("tlspsk handshake: reading ClientHello: %w", err)
	}
	if typ != typeClientHello {
		return c.sendFatal(alertUnexpectedMessage, fmt.Errorf("tlspsk handshake: got message type %d, want ClientHello", typ))
	}
	ch, err := parseClientHello(msg[handshakeHeaderLen:])
	if err != nil {
		return c.sendFatal(alertDecodeError, fmt.Errorf("tlspsk handshake: %w", err))
	}
	c.transcript = append(c.transcript, msg...)

	c.vers = min(ch.Version, maxV)
	if ch.Version < VersionTLS10 || c.vers < minV {
		c.out.version = max(VersionTLS10, min(ch.Version, maxV))
		return c.sendFatal(alertProtocolVersion, fmt.Errorf("tlspsk handshake: client offers up to %s, we accept %s..%s: %w",
			VersionName(ch.Version), VersionName(minV), VersionName(maxV), ErrVersion))
	}
	c.in.version, c.out.version = c.vers, c.vers
	if !slices.Contains(ch.Compression, 0) {
		return c.sendFatal(alertIllegalParameter, errors.New("tlspsk handshake: ClientHello lacks null compression"))
	}
	present, ok := renegotiationInfo(ch.Extensions)
	if !ok {
		return c.sendFatal(alertHandshakeFailure, errors.New("tlspsk handshake: bad renegotiation_info in ClientHello"))
	}
	secureReneg := present || slices.Contains(ch.CipherSuites, scsvRenegotiation)
	for _, s := range cfg.suites() {
		if s.minVersion <= c.vers && slices.Contains(ch.CipherSuites, s.id) {
			c.suite = s
			break
		}
	}
	if c.suite == nil {
		return c.sendFatal(alertHandshakeFailure, fmt.Errorf("tlspsk handshake: client offers suites %04X for %s: %w", ch.CipherSuites, VersionName(c.vers), ErrNoCipherSuite))
	}

	sh := &serverHello{Version: c.vers, Random: make([]byte, randomLen), CipherSuite: c.suite.id}
	if _, err := io.ReadFull(cfg.rand(), sh.Random); err != nil {
		return fmt.Errorf("tlspsk handshake: reading random: %w", err)
	}
	if secureReneg {
		// RFC 5746 §3.6: an empty renegotiation_info tells the client we
		// will not be fooled by a renegotiation (we refuse them anyway);
		// OpenSSL 3 clients require it.
		sh.Extensions = []extension{{Type: extRenegotiationInfo, Data: []byte{0}}}
	}
	flight := [][]byte{sh.marshal()}
	if cfg.Hint != "" {
		c.hint = cfg.Hint
		flight = append(flight, (&pskMessage{typ: typeServerKeyExchange, Value: []byte(cfg.Hint)}).marshal())
	}
	flight = append(flight, appendHandshake(nil, typeServerHelloDone, nil))
	if err := c.writeHandshake(flight...); err != nil {
		return fmt.Errorf("tlspsk handshake: sending ServerHello: %w", err)
	}
	if err := c.flush(); err != nil {
		return fmt.Errorf("tlspsk handshake: sending ServerHello: %w", err)
	}

	// ClientKeyExchange: the identity.
	typ, msg, err = c.readHandshake()
	if err != nil {
		return fmt.Errorf("tlspsk handshake: reading ClientKeyExchange: %w", err)
	}
	if typ != typeClientKeyExchange {
		return c.sendFatal(alertUnexpectedMessage, fmt.Errorf("tlspsk handshake: got message type %d, want ClientKeyExchange", typ))
	}
	cke, err := parsePSKMessage(typ, msg[handshakeHeaderLen:])
	if err != nil {
		return c.sendFatal(alertDecodeError, fmt.Errorf("tlspsk handshake: %w", err))
	}
	c.identity = string(cke.Value)
	key, err := cfg.GetKey(c.identity)
	switch {
	case errors.Is(err, ErrUnknownIdentity) || (err == nil && len(key) == 0):
		return c.sendFatal(alertUnknownPSKIdentity, fmt.Errorf("tlspsk handshake: client identity %q: %w", truncate(c.identity), ErrUnknownIdentity))
	case err != nil:
		return c.sendFatal(alertInternalError, fmt.Errorf("tlspsk handshake: looking up the key for identity %q: %w", truncate(c.identity), err))
	case len(key) > 0xFFFF:
		return c.sendFatal(alertInternalError, fmt.Errorf("tlspsk handshake: GetKey returned a %d-byte key, more than 65535", len(key)))
	}
	c.transcript = append(c.transcript, msg...)

	premaster := pskPremaster(key)
	master := masterSecret(c.vers, premaster, ch.Random, sh.Random)
	clear(premaster)
	defer clear(master)
	if cfg.testHookMaster != nil {
		cfg.testHookMaster(ch.Random, sh.Random, master)
	}
	keys := expandKeys(c.vers, c.suite, master, ch.Random, sh.Random)
	if c.in.next, err = newCipherState(c.vers, c.suite, keys.clientMAC, keys.clientKey, keys.clientIV, false); err != nil {
		return fmt.Errorf("tlspsk handshake: %w", err)
	}
	if c.out.next, err = newCipherState(c.vers, c.suite, keys.serverMAC, keys.serverKey, keys.serverIV, true); err != nil {
		return fmt.Errorf("tlspsk handshake: %w", err)
	}

	// ChangeCipherSpec and Finished from the client: a wrong key shows as a
	// bad record MAC on the Finished record.
	c.expectCCS = true
	typ, msg, err = c.readHandshake()
	if err != nil {
		return badKey("tlspsk handshake: reading the client's Finished", err)
	}
	if typ != typeFinished || c.expectCCS {
		return c.sendFatal(alertUnexpectedMessage, fmt.Errorf("tlspsk handshake: got message type %d, want ChangeCipherSpec and Finished", typ))
	}
	got, err := parseFinished(msg[handshakeHeaderLen:])
	if err != nil {
		return c.sendFatal(alertDecodeError, fmt.Errorf("tlspsk handshake: %w", err))
	}
	if want := finishedSum(c.vers, master, "client finished", c.transcript); !hmac.Equal(got, want) {
		return c.sendFatal(alertDecryptError, fmt.Errorf("tlspsk handshake: client Finished does not verify: %w", ErrBadKey))
	}
	c.transcript = append(c.transcript, msg...)

	if err := c.writeCCS(); err != nil {
		return fmt.Errorf("tlspsk handshake: sending ChangeCipherSpec: %w", err)
	}
	fin := appendHandshake(nil, typeFinished, finishedSum(c.vers, master, "server finished", c.transcript))
	if err := c.writeHandshake(fin); err != nil {
		return fmt.Errorf("tlspsk handshake: sending Finished: %w", err)
	}
	if err := c.flush(); err != nil {
		return fmt.Errorf("tlspsk handshake: sending Finished: %w", err)
	}
	return nil
}

// truncate shortens a peer-supplied identity for an error message.
func truncate(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}
