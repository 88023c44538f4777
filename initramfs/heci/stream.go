package heci

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"time"
)

// Stream is a [Device] carried over a byte stream with the framing of
// specs/heci.md §5: a Unix socket to the ME simulator, or a QEMU
// virtio-serial port. One stream carries several client connections, each
// on its own channel.
//
// Reading is leader/follower when the stream allows it (a Unix socket or a
// pollable virtio port: read deadlines and a non-blocking read): there is
// no reader goroutine; a Send waiting for its reply takes the read token,
// reads the stream itself, hands frames for other channels to their
// inboxes, and gives the token back once it has a frame of its own. A
// round trip then wakes one goroutine (the one that asked), not a reader
// that passes the reply on. A context ending stops a blocked read through a
// read deadline in the past. Frames that arrive while nobody reads (a reset
// while idle) are picked up by a non-blocking read at the start of the next
// Send; when nothing is waiting, that same descriptor call writes the
// request and waits for the reply (sendFast), so a round trip costs the
// reads and the write of a plain echo. Other streams (net.Pipe, io.Pipe) get a reader goroutine that holds
// the token for good.
type Stream struct {
	rw   io.ReadWriteCloser
	opts *Options
	log  *slog.Logger

	wmu  sync.Mutex // serialises frame writes
	wbuf []byte

	// tok is the read token in leader/follower mode: whoever receives it
	// may read the stream until it sends it back. Nil with a reader
	// goroutine.
	tok chan struct{}
	// setDeadline is rw's SetReadDeadline (leader/follower mode).
	setDeadline func(time.Time) error
	expire      func() // sets a read deadline in the past
	// raw reads the descriptor directly (leader/follower mode).
	raw  rawReader
	xbuf []byte // request frame of the fast path; the token holder's

	// The read buffer; only the token holder (or the reader goroutine)
	// touches it. Complete frames may wait in it after a reader stopped.
	rbuf       []byte
	rpos, rend int

	mu     sync.Mutex
	chans  map[uint8]chan Frame
	next   uint8
	closed bool
	err    error // why reading stopped

	done chan struct{} // closed when reading has stopped for good
}

var _ Device = (*Stream)(nil)
var _ Transport = (*streamConn)(nil)

const (
	streamBufSize = 8 << 10 // initial read buffer; grows to the longest frame
	minRead       = 1 << 10 // compact the buffer when less room is left
)

// aLongTimeAgo is a read deadline that has passed.
var aLongTimeAgo = time.Unix(1, 0)

// NewStream starts a stream device over rw, which it owns.
func NewStream(rw io.ReadWriteCloser, opts *Options) *Stream {
	s := &Stream{rw: rw, opts: opts, log: opts.logger(), chans: map[uint8]chan Frame{}, done: make(chan struct{}),
		rbuf: make([]byte, streamBufSize)}
	if d, ok := rw.(interface{ SetReadDeadline(time.Time) error }); ok && d.SetReadDeadline(time.Time{}) == nil {
		if raw := nonblockingRead(rw); raw != nil {
			s.setDeadline, s.raw = d.SetReadDeadline, raw
			s.expire = func() { _ = s.setDeadline(aLongTimeAgo) }
			s.tok = make(chan struct{}, 1)
			s.tok <- struct{}{}
			return s
		}
	}
	go s.readLoop()
	return s
}

// readLoop is the reader goroutine of streams without leader/follower
// reading.
func (s *Stream) readLoop() {
	for {
		f, _, err := s.readFrame(true)
		if err != nil {
			s.fail(err)
			return
		}
		s.deliver(f)
	}
}

// cutFrame decodes the frame at the start of b with the checks of
// [ReadFrame]; n is the frame's size, 0 when b holds only part of it.
func cutFrame(b []byte) (f Frame, n int, err error) {
	if len(b) < 4 {
		return Frame{}, 0, nil
	}
	l := binary.LittleEndian.Uint32(b[0:4])
	if l < 2 {
		return Frame{}, 0, &FrameFormatError{Field: "length", Value: uint64(l), Why: "shorter than type and channel"}
	}
	if l-2 > MaxFramePayload {
		return Frame{}, 0, &FrameFormatError{Field: "length", Value: uint64(l), Why: fmt.Sprintf("payload over %d bytes", MaxFramePayload)}
	}
	n = 4 + int(l)
	if len(b) < n {
		return Frame{}, 0, nil
	}
	f = Frame{Type: FrameType(b[4]), Channel: b[5], Payload: make([]byte, n-6)}
	copy(f.Payload, b[6:n])
	return f, n, nil
}

// readFrame returns the next frame, from the buffer or by reading the
// stream; without block it returns ok false rather than wait. The caller
// holds the read token.
func (s *Stream) readFrame(block bool) (f Frame, ok bool, err error) {
	for {
		f, n, err := cutFrame(s.rbuf[s.rpos:s.rend])
		if err != nil {
			return Frame{}, false, err
		}
		if n > 0 {
			s.rpos += n
			return f, true, nil
		}
		got, err := s.fill(block)
		if err != nil {
			if errors.Is(err, io.EOF) && s.rend > s.rpos {
				err = io.ErrUnexpectedEOF
			}
			return Frame{}, false, err
		}
		if got == 0 && !block {
			return Frame{}, false, nil
		}
	}
}

// rawReader reads a stream's descriptor directly.
type rawReader interface {
	// Read reads what is waiting, without waiting: (0, nil) for nothing.
	Read(p []byte) (int, error)
	// Exchange reads what is waiting into p; when nothing is, it writes w
	// with one non-blocking write (if mu is free at once) and, once all of
	// w is out, waits until it can read. wrote is how much of w went out;
	// held says mu is still locked after a partial write, for the caller
	// to finish. n, wrote and err all 0: the caller must write w itself.
	Exchange(p, w []byte, mu *sync.Mutex) (n, wrote int, held bool, err error)
}

// fill reads more of the stream into the buffer, making room for the
// whole pending frame (its length has passed cutFrame's checks).
func (s *Stream) fill(block bool) (int, error) {
	s.makeRoom()
	var n int
	var err error
	if block {
		n, err = s.rw.Read(s.rbuf[s.rend:])
	} else {
		n, err = s.raw.Read(s.rbuf[s.rend:])
	}
	if n > 0 {
		// An error with data comes back on the next read.
		s.rend += n
		return n, nil
	}
	return 0, err
}

// makeRoom makes room in the read buffer for the whole pending frame.
func (s *Stream) makeRoom() {
	pending := s.rend - s.rpos
	need := 6
	if pending >= 4 {
		need = 4 + int(binary.LittleEndian.Uint32(s.rbuf[s.rpos:]))
	}
	if s.rpos > 0 && (pending == 0 || s.rpos+need > len(s.rbuf) || len(s.rbuf)-s.rend < minRead) {
		copy(s.rbuf, s.rbuf[s.rpos:s.rend])
		s.rpos, s.rend = 0, pending
	}
	if need > len(s.rbuf) {
		b := make([]byte, need)
		copy(b, s.rbuf[s.rpos:s.rend])
		s.rbuf, s.rpos, s.rend = b, 0, pending
	}
}

// deliver hands a frame to its channel's inbox.
func (s *Stream) deliver(f Frame) {
	s.mu.Lock()
	inbox := s.chans[f.Channel]
	s.mu.Unlock()
	if inbox == nil {
		if s.log.Enabled(context.Background(), slog.LevelDebug) {
			s.log.Debug("heci: frame for no channel dropped", "type", f.Type, "channel", f.Channel)
		}
		return
	}
	select {
	case inbox <- f:
	default:
		if s.log.Enabled(context.Background(), slog.LevelDebug) {
			s.log.Debug("heci: unexpected frame dropped", "type", f.Type, "channel", f.Channel)
		}
	}
}

// fail stops reading for good: err is why.
func (s *Stream) fail(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return
	}
	if s.closed {
		err = ErrClosed
	} else if errors.Is(err, io.EOF) {
		err = fmt.Errorf("%w: the stream ended", ErrClosed)
	} else {
		err = fmt.Errorf("%w: reading the stream: %w", ErrClosed, err)
	}
	s.err = err
	close(s.done)
}

// errCanceled is what readFor and recv return when their context ended.
var errCanceled = errors.New("heci: canceled")

// readFor reads the stream for channel ch until a frame for ch arrives,
// delivering frames for other channels. The caller holds the read token.
func (s *Stream) readFor(ctx context.Context, ch uint8, inbox chan Frame) (Frame, error) {
	// The previous reader may have delivered ours before passing the token.
	select {
	case f := <-inbox:
		return f, nil
	case <-s.done:
		return Frame{}, s.streamErr()
	default:
	}
	if ctx.Done() != nil {
		stop := context.AfterFunc(ctx, s.expire)
		defer stop()
	}
	for {
		f, _, err := s.readFrame(true)
		if err != nil {
			if !errors.Is(err, os.ErrDeadlineExceeded) {
				s.fail(err)
				return Frame{}, s.streamErr()
			}
			if ctx.Err() != nil {
				return Frame{}, errCanceled
			}
			// The deadline was set for an earlier reader whose context ended.
			if err := s.setDeadline(time.Time{}); err != nil {
				s.fail(err)
				return Frame{}, s.streamErr()
			}
			continue
		}
		if f.Channel == ch {
			return f, nil
		}
		s.deliver(f)
	}
}

// drainIdle delivers the frames that arrived while nobody was reading, so
// that a reset while idle is seen as one. It does not block, and does
// nothing while someone else is reading (who delivers them anyway).
func (s *Stream) drainIdle() {
	select {
	case <-s.tok:
	default:
		return
	}
	defer func() { s.tok <- struct{}{} }()
	for retried := false; ; {
		f, ok, err := s.readFrame(false)
		switch {
		case err != nil && errors.Is(err, os.ErrDeadlineExceeded) && !retried:
			// Left by a reader whose context ended.
			retried = true
			if err := s.setDeadline(time.Time{}); err != nil {
				s.fail(err)
				return
			}
		case err != nil:
			s.fail(err)
			return
		case !ok:
			return
		default:
			s.deliver(f)
		}
	}
}

func (s *Stream) streamErr() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

func (s *Stream) write(f Frame) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	s.wbuf = AppendFrame(s.wbuf[:0], f)
	if _, err := s.rw.Write(s.wbuf); err != nil {
		return fmt.Errorf("%w: writing a %v frame: %w", ErrClosed, f.Type, err)
	}
	return nil
}

// Close closes the stream and every connection on it.
func (s *Stream) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	err := s.rw.Close()
	if s.tok != nil {
		// A reader fails on the closed stream; with none, reading ends here.
		select {
		case <-s.tok:
			s.fail(ErrClosed)
			s.tok <- struct{}{}
		case <-s.done:
		}
	}
	<-s.done
	return err
}

// Connect connects a new channel to the client.
func (s *Stream) Connect(ctx context.Context, client GUID) (Transport, error) {
	c := &streamConn{s: s, client: client}
	if err := c.connect(ctx, false); err != nil {
		return nil, err
	}
	return c, nil
}

// allocChannel registers a fresh channel.
func (s *Stream) allocChannel() (uint8, chan Frame, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || s.err != nil {
		return 0, nil, ErrClosed
	}
	for range 256 {
		id := s.next
		s.next++
		if _, busy := s.chans[id]; !busy {
			ch := make(chan Frame, 4)
			s.chans[id] = ch
			return id, ch, nil
		}
	}
	return 0, nil, errors.New("heci: all 256 stream channels in use")
}

func (s *Stream) freeChannel(id uint8, ch chan Frame) {
	s.mu.Lock()
	if s.chans[id] == ch {
		delete(s.chans, id)
	}
	s.mu.Unlock()
}

// streamConn is one channel connected to one firmware client.
type streamConn struct {
	s      *Stream
	client GUID

	mu        sync.Mutex // one request in flight
	ch        uint8
	inbox     chan Frame
	max       int
	connected bool
	closed    bool
}

// connect opens a channel, retrying while the ME is not ready or the
// client busy; after a reset (again) it also waits out a vanished client.
func (c *streamConn) connect(ctx context.Context, again bool) error {
	retryable := func(err error) bool {
		return errors.Is(err, ErrNotReady) || errors.Is(err, ErrBusy) || (again && errors.Is(err, ErrNoClient))
	}
	return retryConnect(ctx, c.s.opts, c.client, retryable, func() error { return c.connectOnce(ctx) })
}

func (c *streamConn) connectOnce(ctx context.Context) error {
	id, inbox, err := c.s.allocChannel()
	if err != nil {
		return &ConnectError{Client: c.client, Err: err}
	}
	c.ch, c.inbox = id, inbox
	if err := c.s.write(Frame{Type: FrameConnect, Channel: id, Payload: c.client[:]}); err != nil {
		c.s.freeChannel(id, inbox)
		return &ConnectError{Client: c.client, Err: err}
	}
	fail := func(err error) error {
		c.s.freeChannel(id, inbox)
		return &ConnectError{Client: c.client, Err: err}
	}
	for {
		f, err := c.recv(ctx)
		if err == errCanceled {
			_ = c.s.write(Frame{Type: FrameDisconnect, Channel: id})
			return fail(context.Cause(ctx))
		}
		if err != nil {
			return fail(err)
		}
		switch f.Type {
		case FrameConnected:
			p, err := ParseConnectedPayload(f.Payload)
			if err != nil {
				return fail(err)
			}
			if p.MaxMessageLen == 0 || p.MaxMessageLen > MaxFramePayload {
				return fail(&FrameFormatError{Field: "max_msg_length", Value: uint64(p.MaxMessageLen), Why: fmt.Sprintf("want 1..%d", MaxFramePayload)})
			}
			c.max, c.connected = int(p.MaxMessageLen), true
			c.s.log.Debug("heci: connected", "client", c.client.Name(), "channel", id, "max_msg_length", p.MaxMessageLen, "protocol", p.ProtocolVersion)
			return nil
		case FrameError:
			e, err := ParseErrorPayload(f.Payload)
			if err != nil {
				return fail(err)
			}
			return fail(e)
		case FrameReset, FrameDisconnect:
			return fail(ENODEV)
		default:
			c.s.log.Debug("heci: unexpected frame while connecting", "type", f.Type)
		}
	}
}

// recv waits for the next frame on the channel: from its inbox, or read
// from the stream while holding the read token. It returns errCanceled
// when ctx ends, and the stream's error when reading has stopped.
func (c *streamConn) recv(ctx context.Context) (Frame, error) {
	s := c.s
	select {
	case f := <-c.inbox:
		return f, nil
	case <-s.tok:
		f, err := s.readFor(ctx, c.ch, c.inbox)
		s.tok <- struct{}{}
		return f, err
	case <-ctx.Done():
		return Frame{}, errCanceled
	case <-s.done:
		return Frame{}, s.streamErr()
	}
}

// drop forgets the channel after a reset, a timeout or a close.
func (c *streamConn) drop(sendDisconnect bool) {
	if !c.connected {
		return
	}
	c.connected = false
	if sendDisconnect {
		_ = c.s.write(Frame{Type: FrameDisconnect, Channel: c.ch})
	}
	c.s.freeChannel(c.ch, c.inbox)
}

func (c *streamConn) MaxMessageLen() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.max
}

func (c *streamConn) Send(ctx context.Context, req []byte) ([]byte, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, ErrClosed
	}
	var f Frame
	var err error
	sent := false
	if c.connected && len(req) <= c.max {
		f, sent, err = c.sendFast(ctx, req)
	}
	if !sent {
		if f, sent, err = c.sendSlow(ctx, req); !sent {
			return nil, err
		}
	}
	for {
		if err == errCanceled {
			c.drop(true)
			return nil, fmt.Errorf("waiting for the %s client's reply: %w", c.client.Name(), context.Cause(ctx))
		}
		if err != nil {
			c.drop(false)
			return nil, err
		}
		switch f.Type {
		case FrameMessage:
			if len(f.Payload) > c.max {
				c.drop(true)
				return nil, fmt.Errorf("receiving %d bytes from the %s client (max %d): %w", len(f.Payload), c.client.Name(), c.max, ErrTruncated)
			}
			return f.Payload, nil
		case FrameReset, FrameDisconnect:
			c.drop(false)
			return nil, &ResetError{Client: c.client, Op: "receive"}
		default:
			c.s.log.Debug("heci: unexpected frame dropped", "type", f.Type, "channel", c.ch)
		}
		f, err = c.recv(ctx)
	}
}

// sendSlow sends req and waits for the first frame back. When sent is
// false, err is what Send returns (nothing went out).
func (c *streamConn) sendSlow(ctx context.Context, req []byte) (f Frame, sent bool, err error) {
	// A reset that arrived while idle is reported before anything is sent.
	if c.connected {
		c.s.drainIdle()
		select {
		case f := <-c.inbox:
			if f.Type == FrameReset || f.Type == FrameDisconnect {
				c.drop(false)
				return Frame{}, false, &ResetError{Client: c.client, Op: "idle"}
			}
			c.s.log.Debug("heci: stale frame dropped", "type", f.Type, "channel", c.ch)
		default:
		}
	}
	if !c.connected {
		if err := c.connect(ctx, true); err != nil {
			return Frame{}, false, fmt.Errorf("reconnecting: %w", err)
		}
	}
	if len(req) > c.max {
		return Frame{}, false, fmt.Errorf("sending %d bytes to the %s client (max %d): %w", len(req), c.client.Name(), c.max, ErrTooLong)
	}
	if err := c.s.write(Frame{Type: FrameMessage, Channel: c.ch, Payload: req}); err != nil {
		c.drop(false)
		return Frame{}, false, err
	}
	f, err = c.recv(ctx)
	return f, true, err
}

// sendFast is Send on a connected leader/follower stream when nobody else
// is reading: it takes the read token and, in one go on the descriptor,
// reads what arrived while idle, writes the request and waits for the
// reply, saving the read that finds nothing after the write. When sent is
// false nothing went out and Send goes the slow way, which also reports
// an idle reset the fast path found (it is left in the inbox).
func (c *streamConn) sendFast(ctx context.Context, req []byte) (f Frame, sent bool, err error) {
	s := c.s
	if s.raw == nil {
		return Frame{}, false, nil
	}
	select {
	case <-s.tok:
	default:
		return Frame{}, false, nil
	}
	release := func() { s.tok <- struct{}{} }
	select {
	case <-s.done:
		release()
		return Frame{}, false, nil
	default:
	}
	if len(c.inbox) > 0 {
		release()
		return Frame{}, false, nil
	}
	if ctx.Done() != nil {
		stop := context.AfterFunc(ctx, s.expire)
		defer stop()
	}
	s.xbuf = AppendFrame(s.xbuf[:0], Frame{Type: FrameMessage, Channel: c.ch, Payload: req})
	for {
		// Frames already read: for other channels, or one for us from
		// before the request (a reset while idle).
		for {
			fr, n, err := cutFrame(s.rbuf[s.rpos:s.rend])
			if err != nil {
				s.fail(err)
				release()
				return Frame{}, false, nil
			}
			if n == 0 {
				break
			}
			s.rpos += n
			s.deliver(fr)
		}
		if len(c.inbox) > 0 {
			release()
			return Frame{}, false, nil
		}
		s.makeRoom()
		n, wrote, held, err := s.raw.Exchange(s.rbuf[s.rend:], s.xbuf, &s.wmu)
		s.rend += n
		switch {
		case wrote == len(s.xbuf):
			// The request is out and maybe the reply in: read on as usual.
			f, err := s.readFor(ctx, c.ch, c.inbox)
			release()
			return f, true, err
		case held:
			release()
			_, werr := s.rw.Write(s.xbuf[wrote:])
			s.wmu.Unlock()
			if werr != nil {
				return Frame{}, true, fmt.Errorf("%w: writing a %v frame: %w", ErrClosed, FrameMessage, werr)
			}
			f, err := c.recv(ctx)
			return f, true, err
		case n == 0 && err == nil:
			release()
			return Frame{}, false, nil
		}
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) && ctx.Err() == nil {
				// Left by a reader whose context ended.
				if err := s.setDeadline(time.Time{}); err == nil {
					continue
				}
			}
			if !errors.Is(err, os.ErrDeadlineExceeded) {
				s.fail(err)
			}
			release()
			return Frame{}, false, nil
		}
	}
}

func (c *streamConn) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil
	}
	c.closed = true
	c.drop(true)
	return nil
}
