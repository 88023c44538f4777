package heci

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
)

// Stream is a [Device] carried over a byte stream with the framing of
// specs/heci.md §5: a Unix socket to the ME simulator, or a QEMU
// virtio-serial port. One stream carries several client connections, each
// on its own channel.
type Stream struct {
	rw   io.ReadWriteCloser
	opts *Options
	log  *slog.Logger

	wmu  sync.Mutex // serialises frame writes
	wbuf []byte

	mu     sync.Mutex
	chans  map[uint8]chan Frame
	next   uint8
	closed bool
	err    error // why the reader stopped

	done chan struct{} // closed when the reader stops
}

var _ Device = (*Stream)(nil)
var _ Transport = (*streamConn)(nil)

// NewStream starts a stream device over rw, which it owns.
func NewStream(rw io.ReadWriteCloser, opts *Options) *Stream {
	s := &Stream{rw: rw, opts: opts, log: opts.logger(), chans: map[uint8]chan Frame{}, done: make(chan struct{})}
	go s.readLoop()
	return s
}

func (s *Stream) readLoop() {
	br := bufio.NewReaderSize(s.rw, 64<<10)
	var err error
	for {
		var f Frame
		f, err = ReadFrame(br)
		if err != nil {
			break
		}
		s.mu.Lock()
		inbox := s.chans[f.Channel]
		s.mu.Unlock()
		if inbox == nil {
			s.log.Debug("heci: frame for no channel dropped", "type", f.Type, "channel", f.Channel)
			continue
		}
		select {
		case inbox <- f:
		default:
			s.log.Debug("heci: unexpected frame dropped", "type", f.Type, "channel", f.Channel)
		}
	}
	s.mu.Lock()
	if s.closed {
		err = ErrClosed
	} else if errors.Is(err, io.EOF) {
		err = fmt.Errorf("%w: the stream ended", ErrClosed)
	} else {
		err = fmt.Errorf("%w: reading the stream: %w", ErrClosed, err)
	}
	s.err = err
	s.mu.Unlock()
	close(s.done)
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
		select {
		case f := <-inbox:
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
		case <-ctx.Done():
			_ = c.s.write(Frame{Type: FrameDisconnect, Channel: id})
			return fail(context.Cause(ctx))
		case <-c.s.done:
			return fail(c.s.streamErr())
		}
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
	// A reset that arrived while idle is reported before anything is sent.
	if c.connected {
		select {
		case f := <-c.inbox:
			if f.Type == FrameReset || f.Type == FrameDisconnect {
				c.drop(false)
				return nil, &ResetError{Client: c.client, Op: "idle"}
			}
			c.s.log.Debug("heci: stale frame dropped", "type", f.Type, "channel", c.ch)
		default:
		}
	}
	if !c.connected {
		if err := c.connect(ctx, true); err != nil {
			return nil, fmt.Errorf("reconnecting: %w", err)
		}
	}
	if len(req) > c.max {
		return nil, fmt.Errorf("sending %d bytes to the %s client (max %d): %w", len(req), c.client.Name(), c.max, ErrTooLong)
	}
	if err := c.s.write(Frame{Type: FrameMessage, Channel: c.ch, Payload: req}); err != nil {
		c.drop(false)
		return nil, err
	}
	for {
		select {
		case f := <-c.inbox:
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
		case <-ctx.Done():
			c.drop(true)
			return nil, fmt.Errorf("waiting for the %s client's reply: %w", c.client.Name(), context.Cause(ctx))
		case <-c.s.done:
			c.drop(false)
			return nil, c.s.streamErr()
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
