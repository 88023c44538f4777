package amtsim

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"sync"
	"time"

	"github.com/provstick/provstick/initramfs/heci"
)

// Maximum message lengths the simulated clients report on connect.
// Real values vary by firmware; these are the simulator's choice.
const (
	AMTHIMaxMessageLen = 4096
	MKHIMaxMessageLen  = 512
	protocolVersion    = 1
)

// MEOptions configure an [MEServer].
type MEOptions struct {
	// Logger gets one debug line per command (name and status only,
	// never message bodies) and info lines for events; nil discards.
	Logger *slog.Logger
	// ResetDowntime is how long the ME stays not ready after a reset
	// (default 0: ready again at once).
	ResetDowntime time.Duration
	// Seed makes garbage replies reproducible (default 1).
	Seed uint64
	// LME serves the LME client with the local WS-Man interface for
	// host-based activation (hostbased.go); false: no such client (ENOTTY).
	LME bool
}

// MEServer serves the ME side of one [Device] on any number of streams.
type MEServer struct {
	dev  *Device
	opts MEOptions
	log  *slog.Logger

	mu            sync.Mutex
	conns         map[*meConn]struct{}
	notReadyUntil time.Time
	resetNext     int
	garbageNext   int
	truncateNext  int
	delay         time.Duration
	rng           *rand.Rand
	removeHook    func()
	local         localWSMan // the LME client, hostbased.go
}

// NewMEServer returns a server answering for dev.
func NewMEServer(dev *Device, opts *MEOptions) *MEServer {
	s := &MEServer{dev: dev, conns: map[*meConn]struct{}{}}
	if opts != nil {
		s.opts = *opts
	}
	s.log = s.opts.Logger
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	seed := s.opts.Seed
	if seed == 0 {
		seed = 1
	}
	s.rng = rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	s.removeHook = dev.OnReset(s.resetAll)
	return s
}

// Device is the simulated machine.
func (s *MEServer) Device() *Device { return s.dev }

// ---- fault injection ----

// NotReadyFor makes the ME not ready for d: connects fail with ENODEV and
// AMTHI commands answer NOT_READY (specs/heci.md §4, quirk 1).
func (s *MEServer) NotReadyFor(d time.Duration) {
	s.mu.Lock()
	s.notReadyUntil = time.Now().Add(d)
	s.mu.Unlock()
}

// ResetMidRequest makes the next n requests end in a link reset instead
// of a reply: the request is read, then every channel gets a reset frame.
func (s *MEServer) ResetMidRequest(n int) { s.setCount(&s.resetNext, n) }

// GarbageReplies makes the next n replies random bytes.
func (s *MEServer) GarbageReplies(n int) { s.setCount(&s.garbageNext, n) }

// TruncatedReplies makes the next n replies lose their second half.
func (s *MEServer) TruncatedReplies(n int) { s.setCount(&s.truncateNext, n) }

// SlowReplies delays every reply by d (0 turns it off).
func (s *MEServer) SlowReplies(d time.Duration) {
	s.mu.Lock()
	s.delay = d
	s.mu.Unlock()
}

func (s *MEServer) setCount(p *int, n int) {
	s.mu.Lock()
	*p = n
	s.mu.Unlock()
}

// replyFaults are the faults that apply to one reply.
type replyFaults struct {
	reset, garbage, truncate bool
	delay                    time.Duration
}

// faults takes the faults for the next reply in one critical section: a
// reset fires first; garbage, then truncation, only without a reset.
func (s *MEServer) faults() replyFaults {
	s.mu.Lock()
	defer s.mu.Unlock()
	f := replyFaults{delay: s.delay}
	take := func(p *int) bool {
		if *p > 0 {
			*p--
			return true
		}
		return false
	}
	if f.reset = take(&s.resetNext); !f.reset {
		if f.garbage = take(&s.garbageNext); !f.garbage {
			f.truncate = take(&s.truncateNext)
		}
	}
	return f
}

func (s *MEServer) notReady() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return time.Now().Before(s.notReadyUntil)
}

// resetAll is the ME reset: every channel of every stream gets a reset
// frame and is closed; the ME is then not ready for ResetDowntime.
func (s *MEServer) resetAll() {
	s.mu.Lock()
	if s.opts.ResetDowntime > 0 {
		s.notReadyUntil = time.Now().Add(s.opts.ResetDowntime)
	}
	conns := make([]*meConn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	s.log.Info("amtsim: ME reset", "streams", len(conns))
	for _, c := range conns {
		c.resetChannels()
	}
}

// ---- serving ----

// Listen parses a unix:// address (see heci.ParseAddress), removes a stale
// socket file and listens on it.
func Listen(addr string) (net.Listener, error) {
	a, err := heci.ParseAddress(addr)
	if err != nil {
		return nil, err
	}
	if a.Kind != heci.KindUnix {
		return nil, fmt.Errorf("listening on %s: the simulator listens on unix:// addresses only (QEMU connects to one as a virtio-serial chardev)", addr)
	}
	if fi, err := os.Lstat(a.Path); err == nil && fi.Mode()&os.ModeSocket != 0 {
		if c, err := net.Dial("unix", a.Path); err == nil {
			c.Close()
			return nil, fmt.Errorf("listening on %s: another simulator is serving there", a.Path)
		}
		os.Remove(a.Path)
	}
	ln, err := net.Listen("unix", a.Path)
	if err != nil {
		return nil, fmt.Errorf("listening on %s: %w", addr, err)
	}
	return ln, nil
}

// Serve accepts streams on ln until ctx ends or ln fails, serving each on
// its own goroutine. It closes ln and every stream before returning; the
// error is nil after ctx ended.
func (s *MEServer) Serve(ctx context.Context, ln net.Listener) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			ln.Close()
			return fmt.Errorf("accepting ME simulator connections: %w", err)
		}
		wg.Go(func() {
			if err := s.ServeConn(ctx, c); err != nil {
				s.log.Debug("amtsim: stream ended", "err", err)
			}
		})
	}
}

// ServeConn serves one stream until it ends or ctx ends; it closes rw.
// io.EOF from the peer is a clean end (nil).
func (s *MEServer) ServeConn(ctx context.Context, rw io.ReadWriteCloser) error {
	c := &meConn{s: s, rw: rw, chans: map[uint8]heci.GUID{}}
	s.mu.Lock()
	s.conns[c] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
	}()
	stop := context.AfterFunc(ctx, func() { rw.Close() })
	defer stop()
	defer rw.Close()
	err := c.loop()
	if errors.Is(err, io.EOF) || ctx.Err() != nil {
		return nil
	}
	return err
}

// Pipe returns a heci.Device connected to this server through an
// in-memory pipe (no socket), for tests. Close it to end the stream.
func (s *MEServer) Pipe(ctx context.Context, opts *heci.Options) heci.Device {
	a, b := net.Pipe()
	go s.ServeConn(ctx, b)
	return heci.NewStream(a, opts)
}

// meConn is one stream from one host.
type meConn struct {
	s  *MEServer
	rw io.ReadWriteCloser

	wmu  sync.Mutex
	wbuf []byte

	mu    sync.Mutex
	chans map[uint8]heci.GUID // connected channels
}

func (c *meConn) write(f heci.Frame) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.wbuf = heci.AppendFrame(c.wbuf[:0], f)
	_, err := c.rw.Write(c.wbuf)
	return err
}

func (c *meConn) resetChannels() {
	c.mu.Lock()
	chans := make([]uint8, 0, len(c.chans))
	for ch := range c.chans {
		chans = append(chans, ch)
	}
	clear(c.chans)
	c.mu.Unlock()
	for _, ch := range chans {
		_ = c.write(heci.Frame{Type: heci.FrameReset, Channel: ch})
	}
}

func (c *meConn) loop() error {
	br := bufio.NewReaderSize(c.rw, 64<<10)
	for {
		f, err := heci.ReadFrame(br)
		if err != nil {
			return err
		}
		if err := c.handle(f); err != nil {
			return err
		}
	}
}

func (c *meConn) handle(f heci.Frame) error {
	s := c.s
	switch f.Type {
	case heci.FrameConnect:
		client, err := heci.ParseConnectPayload(f.Payload)
		if err != nil {
			return err
		}
		errno, max := s.connect(client)
		if errno != 0 {
			b := []byte{byte(errno), byte(errno >> 8), byte(errno >> 16), byte(errno >> 24)}
			s.log.Debug("amtsim: connect refused", "client", client.Name(), "errno", errno)
			return c.write(heci.Frame{Type: heci.FrameError, Channel: f.Channel, Payload: b})
		}
		c.mu.Lock()
		c.chans[f.Channel] = client
		c.mu.Unlock()
		p, _ := heci.ConnectedPayload{MaxMessageLen: uint32(max), ProtocolVersion: protocolVersion}.AppendBinary(nil)
		return c.write(heci.Frame{Type: heci.FrameConnected, Channel: f.Channel, Payload: p})
	case heci.FrameDisconnect:
		c.mu.Lock()
		delete(c.chans, f.Channel)
		c.mu.Unlock()
		return nil
	case heci.FrameMessage:
		c.mu.Lock()
		client, ok := c.chans[f.Channel]
		c.mu.Unlock()
		if !ok {
			s.log.Debug("amtsim: message on a closed channel dropped", "channel", f.Channel)
			return nil
		}
		return c.message(f.Channel, client, f.Payload)
	}
	s.log.Debug("amtsim: unexpected frame dropped", "type", f.Type)
	return nil
}

// connect decides a connection: errno 0 and the max message length, or an
// errno (specs/heci.md §1 connect errors).
func (s *MEServer) connect(client heci.GUID) (heci.Errno, int) {
	if s.notReady() {
		return heci.ENODEV, 0
	}
	switch client {
	case heci.AMTHIClient:
		if !s.dev.shallow().AMTPresent {
			return heci.ENOTTY, 0
		}
		return 0, AMTHIMaxMessageLen
	case heci.MKHIClient:
		return 0, MKHIMaxMessageLen
	case heci.LMEClient:
		if !s.opts.LME || !s.dev.shallow().AMTPresent {
			return heci.ENOTTY, 0
		}
		return 0, LMEMaxMessageLen
	}
	return heci.ENOTTY, 0
}

func (c *meConn) message(ch uint8, client heci.GUID, req []byte) error {
	s := c.s
	var reply []byte
	switch client {
	case heci.AMTHIClient:
		reply = s.amthi(req)
	case heci.MKHIClient:
		reply = s.mkhi(req)
	case heci.LMEClient:
		reply = s.lme(req)
	}
	f := s.faults()
	if f.reset {
		s.log.Info("amtsim: fault: link reset mid-request")
		c.resetChannels()
		return nil
	}
	if f.garbage {
		s.mu.Lock()
		reply = make([]byte, 1+s.rng.IntN(64))
		for i := range reply {
			reply[i] = byte(s.rng.UintN(256))
		}
		s.mu.Unlock()
		s.log.Info("amtsim: fault: garbage reply", "bytes", len(reply))
	} else if f.truncate {
		reply = reply[:len(reply)/2]
		s.log.Info("amtsim: fault: truncated reply", "bytes", len(reply))
	}
	if f.delay > 0 {
		time.Sleep(f.delay)
	}
	return c.write(heci.Frame{Type: heci.FrameMessage, Channel: ch, Payload: reply})
}

// Close unregisters the server from its device's reset events.
func (s *MEServer) Close() error {
	s.removeHook()
	return nil
}
