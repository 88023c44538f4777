package tlspsk

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Conn is a TLS-PSK connection: a net.Conn whose Read and Write carry
// application data after the handshake, which runs on first use or through
// Handshake/HandshakeContext.
//
// Read and Write may be called concurrently, like any net.Conn.
type Conn struct {
	conn     net.Conn
	isClient bool
	config   *Config
	log      *slog.Logger

	handshakeMu       sync.Mutex
	handshakeErr      error
	handshakeComplete atomic.Bool
	vers              uint16 // negotiated version, 0 before the hellos
	suite             *suite
	identity, hint    string
	transcript        []byte // handshake messages so far, for Finished
	expectCCS         bool

	inMu           sync.Mutex
	in             halfConn
	inErr          error  // sticky read error (io.EOF after close_notify)
	raw            []byte // read buffer; raw[rawOff:rawEnd] is unprocessed
	rawOff, rawEnd int
	input          []byte // decrypted application data not yet read
	hand           []byte // handshake bytes not yet parsed
	warnings       int    // consecutive warning alerts
	empties        int    // consecutive empty records

	outMu           sync.Mutex
	out             halfConn
	outErr          error
	sendBuf         []byte
	closeNotifySent bool
}

var _ net.Conn = (*Conn)(nil)

// rawBufLen holds two maximal records, so that reading ahead rarely
// needs a compaction.
const rawBufLen = 2 * (recordHeaderLen + maxCiphertext)

// initialRawLen is the first size of the read and write buffers.
const initialRawLen = 4 << 10

// maxOverhead bounds what sealing adds to a payload: explicit IV, MAC and
// padding.
const maxOverhead = 16 + 32 + 256

// flushAt is how many bytes of sealed records Write gathers before it
// hands them to the network in one call.
const flushAt = 64 << 10

// Client returns a client-side Conn over conn. The handshake runs on first
// Read or Write, or on Handshake/HandshakeContext.
func Client(conn net.Conn, config *Config) *Conn {
	return &Conn{conn: conn, config: config, isClient: true, log: config.logger()}
}

// Server returns a server-side Conn over conn.
func Server(conn net.Conn, config *Config) *Conn {
	return &Conn{conn: conn, config: config, log: config.logger()}
}

// NetConn returns the underlying connection.
func (c *Conn) NetConn() net.Conn { return c.conn }

// LocalAddr returns the local network address.
func (c *Conn) LocalAddr() net.Addr { return c.conn.LocalAddr() }

// RemoteAddr returns the remote network address.
func (c *Conn) RemoteAddr() net.Addr { return c.conn.RemoteAddr() }

// SetDeadline sets the read and write deadlines of the underlying connection.
// A Write that times out leaves the connection unusable for writing.
func (c *Conn) SetDeadline(t time.Time) error { return c.conn.SetDeadline(t) }

// SetReadDeadline sets the read deadline. A timed-out Read may be retried.
func (c *Conn) SetReadDeadline(t time.Time) error { return c.conn.SetReadDeadline(t) }

// SetWriteDeadline sets the write deadline.
func (c *Conn) SetWriteDeadline(t time.Time) error { return c.conn.SetWriteDeadline(t) }

// ConnectionState returns the negotiated parameters.
func (c *Conn) ConnectionState() ConnectionState {
	c.handshakeMu.Lock()
	defer c.handshakeMu.Unlock()
	st := ConnectionState{
		Version:           c.vers,
		HandshakeComplete: c.handshakeComplete.Load(),
		Identity:          c.identity,
		Hint:              c.hint,
	}
	if c.suite != nil {
		st.CipherSuite = c.suite.id
	}
	return st
}

// Handshake runs the handshake if it has not run yet.
func (c *Conn) Handshake() error { return c.HandshakeContext(context.Background()) }

// HandshakeContext runs the handshake if it has not run yet. If ctx ends
// first, the underlying connection is closed and the handshake fails with
// ctx's error. Deadlines set on the Conn apply too. A failed handshake
// fails every later call with the same error.
func (c *Conn) HandshakeContext(ctx context.Context) (ret error) {
	if c.handshakeComplete.Load() {
		return nil
	}
	c.handshakeMu.Lock()
	defer c.handshakeMu.Unlock()
	if c.handshakeErr != nil {
		return c.handshakeErr
	}
	if c.handshakeComplete.Load() {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("tlspsk handshake: %w", err)
	}
	if ctx.Done() != nil {
		done := make(chan struct{})
		interrupted := make(chan error, 1)
		go func() {
			select {
			case <-ctx.Done():
				_ = c.conn.Close()
				interrupted <- ctx.Err()
			case <-done:
				interrupted <- nil
			}
		}()
		defer func() {
			close(done)
			if err := <-interrupted; err != nil {
				ret = fmt.Errorf("tlspsk handshake: %w", err)
				c.handshakeErr = ret
			}
		}()
	}
	c.inMu.Lock()
	defer c.inMu.Unlock()
	var err error
	if c.isClient {
		err = c.clientHandshake()
	} else {
		err = c.serverHandshake()
	}
	c.transcript = nil
	if err != nil {
		c.handshakeErr = err
		c.log.Debug("tlspsk handshake failed", "client", c.isClient, "remote", c.conn.RemoteAddr(), "err", err)
		return err
	}
	c.handshakeComplete.Store(true)
	c.log.Debug("tlspsk handshake complete", "client", c.isClient, "remote", c.conn.RemoteAddr(),
		"version", VersionName(c.vers), "suite", c.suite.name, "identity", c.identity, "hint", c.hint)
	return nil
}

// Read reads application data. It returns io.EOF after the peer's
// close_notify, and also when the peer closes the connection at a record
// boundary without one (as HTTP/1 servers may); a connection cut inside a
// record gives io.ErrUnexpectedEOF.
func (c *Conn) Read(b []byte) (int, error) {
	if err := c.Handshake(); err != nil {
		return 0, err
	}
	if len(b) == 0 {
		return 0, nil
	}
	c.inMu.Lock()
	defer c.inMu.Unlock()
	for len(c.input) == 0 {
		if err := c.readRecord(); err != nil {
			return 0, err
		}
	}
	n := copy(b, c.input)
	c.input = c.input[n:]
	return n, nil
}

// Write writes application data, in records of at most 16 KiB. In TLS 1.0
// with a CBC suite the first record of each Write holds one byte (the 1/n-1
// split against BEAST).
func (c *Conn) Write(b []byte) (int, error) {
	if err := c.Handshake(); err != nil {
		return 0, err
	}
	c.outMu.Lock()
	defer c.outMu.Unlock()
	if c.outErr != nil {
		return 0, c.outErr
	}
	if c.closeNotifySent {
		return 0, errShutdown
	}
	n, pending := 0, 0
	first := len(b)
	if c.vers == VersionTLS10 && c.out.cs != nil && c.out.cs.cbc != nil && len(b) > 1 {
		first = 1
	}
	for len(b) > 0 {
		m := min(len(b), maxPlaintext, first)
		first = maxPlaintext
		if err := c.sealLocked(recordApplicationData, b[:m]); err != nil {
			return n, err
		}
		b = b[m:]
		pending += m
		if len(c.sendBuf) >= flushAt || len(b) == 0 {
			if err := c.flushLocked(); err != nil {
				return n, err
			}
			n += pending
			pending = 0
		}
	}
	return n, nil
}

var errShutdown = errors.New("tlspsk: write after close_notify")

// CloseWrite sends close_notify and leaves the connection open for reading.
func (c *Conn) CloseWrite() error {
	if !c.handshakeComplete.Load() {
		return errors.New("tlspsk: CloseWrite before the handshake completed")
	}
	return c.closeNotify()
}

// Close sends close_notify (after a completed handshake) and closes the
// underlying connection.
func (c *Conn) Close() error {
	var alertErr error
	if c.handshakeComplete.Load() {
		alertErr = c.closeNotify()
	}
	if err := c.conn.Close(); err != nil {
		return err
	}
	if alertErr != nil {
		return fmt.Errorf("tlspsk: sending close_notify: %w", alertErr)
	}
	return nil
}

func (c *Conn) closeNotify() error {
	// A Write blocked on a stuck peer holds outMu; the deadline frees it.
	_ = c.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	c.outMu.Lock()
	defer c.outMu.Unlock()
	if c.closeNotifySent {
		return nil
	}
	c.closeNotifySent = true
	if c.outErr != nil {
		return nil // after a fatal alert there is nothing to close
	}
	return c.sendAlertLocked(alertLevelWarning, alertCloseNotify)
}

// sealLocked appends one record to sendBuf. Called with outMu held.
func (c *Conn) sealLocked(typ uint8, data []byte) error {
	if cap(c.sendBuf)-len(c.sendBuf) < recordHeaderLen+len(data)+maxOverhead {
		// Grow once to what a Write gathers, rather than record by record.
		c.sendBuf = slices.Grow(c.sendBuf, max(initialRawLen, min(flushAt+recordHeaderLen+maxCiphertext, 2*cap(c.sendBuf)+recordHeaderLen+len(data)+maxOverhead)))
	}
	var err error
	c.sendBuf, err = c.out.seal(c.sendBuf, typ, data, c.config.rand())
	if err != nil {
		c.outErr = fmt.Errorf("tlspsk: sealing record: %w", err)
		return c.outErr
	}
	return nil
}

// writeRecordsLocked seals data as records of type typ, splitting at 16 KiB.
func (c *Conn) writeRecordsLocked(typ uint8, data []byte) error {
	for len(data) > 0 {
		m := min(len(data), maxPlaintext)
		if err := c.sealLocked(typ, data[:m]); err != nil {
			return err
		}
		data = data[m:]
	}
	return nil
}

func (c *Conn) flushLocked() error {
	if len(c.sendBuf) == 0 {
		return nil
	}
	_, err := c.conn.Write(c.sendBuf)
	c.sendBuf = c.sendBuf[:0]
	if err != nil {
		c.outErr = fmt.Errorf("tlspsk: writing: %w", err)
		return c.outErr
	}
	return nil
}

// sendAlertLocked sends one alert and flushes. A fatal alert makes later
// writes fail with the *AlertError it returns.
func (c *Conn) sendAlertLocked(level uint8, a alert) error {
	if a != alertCloseNotify && a != alertNoRenegotiation {
		level = alertLevelFatal
	}
	if err := c.sealLocked(recordAlert, []byte{level, byte(a)}); err != nil {
		return err
	}
	err := c.flushLocked()
	if level == alertLevelFatal {
		c.outErr = &AlertError{Description: uint8(a)}
		return c.outErr
	}
	return err
}

// fatal sends fatal alert a (best effort), records it as the sticky read
// error and returns it. Called with inMu held, never with outMu.
func (c *Conn) fatal(a alert) error {
	c.outMu.Lock()
	if c.outErr == nil {
		// Best effort: the peer may be gone, and the alert is what we
		// report either way.
		_ = c.sendAlertLocked(alertLevelFatal, a)
	}
	c.outMu.Unlock()
	ae := &AlertError{Description: uint8(a)}
	if c.inErr == nil {
		c.inErr = ae
	}
	return ae
}

// fill makes at least n unprocessed bytes available in raw.
func (c *Conn) fill(n int) error {
	for c.rawEnd-c.rawOff < n {
		if c.rawOff+n > len(c.raw) {
			// Start small (handshakes are a few hundred bytes) and grow
			// to two maximal records on the first big one.
			buf := c.raw
			if n > len(buf) {
				buf = make([]byte, max(initialRawLen, min(rawBufLen, 2*n)))
			}
			copy(buf, c.raw[c.rawOff:c.rawEnd])
			c.raw = buf
			c.rawEnd -= c.rawOff
			c.rawOff = 0
		}
		m, err := c.conn.Read(c.raw[c.rawEnd:])
		c.rawEnd += m
		if err != nil && c.rawEnd-c.rawOff < n {
			if errors.Is(err, io.EOF) && c.rawEnd != c.rawOff {
				err = io.ErrUnexpectedEOF
			}
			return err
		}
	}
	return nil
}

// readRecord reads one record and acts on it: application data lands in
// c.input, handshake bytes in c.hand, alerts and ChangeCipherSpec are
// handled. Called with inMu held.
func (c *Conn) readRecord() error {
	if c.inErr != nil {
		return c.inErr
	}
	if err := c.fill(recordHeaderLen); err != nil {
		return c.readErr(err)
	}
	hdr := c.raw[c.rawOff : c.rawOff+recordHeaderLen]
	typ := hdr[0]
	vers := binary.BigEndian.Uint16(hdr[1:3])
	n := int(binary.BigEndian.Uint16(hdr[3:5]))
	if typ < recordChangeCipherSpec || typ > recordApplicationData {
		return c.fatal(alertUnexpectedMessage)
	}
	// Any 3.x during the handshake (old firmware may keep 3.1 in record
	// headers until it has switched keys), the negotiated one afterwards.
	if vers>>8 != 3 || (c.handshakeComplete.Load() && vers != c.in.version) {
		return c.fatal(alertProtocolVersion)
	}
	if n > maxCiphertext {
		return c.fatal(alertRecordOverflow)
	}
	if err := c.fill(recordHeaderLen + n); err != nil {
		return c.readErr(err)
	}
	frag := c.raw[c.rawOff+recordHeaderLen : c.rawOff+recordHeaderLen+n]
	c.rawOff += recordHeaderLen + n
	data, a := c.in.open(typ, frag)
	if a != 0 {
		return c.fatal(a)
	}
	if typ != recordAlert {
		c.warnings = 0
	}
	switch typ {
	case recordAlert:
		if len(data) != 2 {
			return c.fatal(alertDecodeError)
		}
		level, desc := data[0], alert(data[1])
		if desc == alertCloseNotify {
			c.inErr = io.EOF
			return io.EOF
		}
		if level == alertLevelWarning {
			c.warnings++
			if c.warnings > maxConsecutiveWarnings {
				return c.fatal(alertUnexpectedMessage)
			}
			c.log.Debug("tlspsk warning alert", "alert", desc.String())
			return nil
		}
		c.inErr = &AlertError{Description: uint8(desc), Remote: true}
		return c.inErr
	case recordChangeCipherSpec:
		if !c.expectCCS || len(c.hand) != 0 || len(data) != 1 || data[0] != 1 {
			return c.fatal(alertUnexpectedMessage)
		}
		c.expectCCS = false
		if err := c.in.changeCipherSpec(); err != nil {
			return c.fatal(alertInternalError)
		}
		return nil
	case recordHandshake:
		if len(data) == 0 || len(c.hand)+len(data) > handshakeHeaderLen+maxHandshakeLen {
			return c.fatal(alertUnexpectedMessage)
		}
		c.hand = append(c.hand, data...)
		if c.handshakeComplete.Load() {
			return c.postHandshake()
		}
		return nil
	default: // application data
		if !c.handshakeComplete.Load() || c.expectCCS {
			return c.fatal(alertUnexpectedMessage)
		}
		if len(data) == 0 {
			c.empties++
			if c.empties > maxConsecutiveEmptyRecords {
				return c.fatal(alertUnexpectedMessage)
			}
			return nil
		}
		c.empties = 0
		c.input = data
		return nil
	}
}

// readErr records a transport error. Timeouts are not sticky: fill keeps
// what it read, so the caller may retry.
func (c *Conn) readErr(err error) error {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return err
	}
	c.inErr = err
	return err
}

// postHandshake handles handshake messages after the handshake: the client
// refuses a HelloRequest and the server a renegotiating ClientHello with a
// no_renegotiation warning (RFC 5246 §7.2.2, §7.4.1.1); anything else is
// fatal.
func (c *Conn) postHandshake() error {
	for len(c.hand) >= handshakeHeaderLen {
		n := int(c.hand[1])<<16 | int(c.hand[2])<<8 | int(c.hand[3])
		if n > maxHandshakeLen {
			return c.fatal(alertDecodeError)
		}
		if len(c.hand) < handshakeHeaderLen+n {
			return nil
		}
		typ := c.hand[0]
		c.hand = c.hand[handshakeHeaderLen+n:]
		if (c.isClient && typ == typeHelloRequest && n == 0) || (!c.isClient && typ == typeClientHello) {
			c.outMu.Lock()
			err := c.outErr
			if err == nil {
				err = c.sendAlertLocked(alertLevelWarning, alertNoRenegotiation)
			}
			c.outMu.Unlock()
			if err != nil {
				return err
			}
			continue
		}
		return c.fatal(alertUnexpectedMessage)
	}
	if len(c.hand) == 0 {
		c.hand = nil
	}
	return nil
}

// readHandshake returns the next handshake message (header included),
// reading records as needed. A client ignores HelloRequest during the
// handshake (RFC 5246 §7.4.1.1). Called with inMu held.
func (c *Conn) readHandshake() (uint8, []byte, error) {
	for {
		if len(c.hand) >= handshakeHeaderLen {
			n := int(c.hand[1])<<16 | int(c.hand[2])<<8 | int(c.hand[3])
			if n > maxHandshakeLen {
				return 0, nil, c.fatal(alertDecodeError)
			}
			if len(c.hand) >= handshakeHeaderLen+n {
				msg := make([]byte, handshakeHeaderLen+n)
				copy(msg, c.hand)
				c.hand = c.hand[handshakeHeaderLen+n:]
				if c.isClient && msg[0] == typeHelloRequest {
					continue
				}
				return msg[0], msg, nil
			}
		}
		if err := c.readRecord(); err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET) {
				return 0, nil, fmt.Errorf("%w: %w", ErrHandshakeClosed, err)
			}
			return 0, nil, err
		}
	}
}

// writeHandshake seals handshake messages (and adds them to the transcript)
// without flushing.
func (c *Conn) writeHandshake(msgs ...[]byte) error {
	c.outMu.Lock()
	defer c.outMu.Unlock()
	var all []byte
	for _, m := range msgs {
		c.transcript = append(c.transcript, m...)
		all = append(all, m...)
	}
	return c.writeRecordsLocked(recordHandshake, all)
}

// writeCCS seals ChangeCipherSpec and switches the write side to the new keys.
func (c *Conn) writeCCS() error {
	c.outMu.Lock()
	defer c.outMu.Unlock()
	if err := c.sealLocked(recordChangeCipherSpec, []byte{1}); err != nil {
		return err
	}
	return c.out.changeCipherSpec()
}

func (c *Conn) flush() error {
	c.outMu.Lock()
	defer c.outMu.Unlock()
	return c.flushLocked()
}

// sendFatal sends a fatal alert during the handshake and returns err
// wrapped together with the alert.
func (c *Conn) sendFatal(a alert, err error) error {
	ae := c.fatal(a)
	if err == nil {
		return ae
	}
	return fmt.Errorf("%w (%w)", err, ae)
}
