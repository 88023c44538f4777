// Package hello is the kiosk's hello listener (../../../shared/specs/amt-psk.md
// §2): AMT machines in setup mode open a TCP connection to port 9971, write
// one hello and close; the kiosk answers by connecting back. The listener
// reads each connection with a short deadline and a size cap, parses the
// message at EOF with internal/hello, and hands every outcome — a PSK hello,
// a PKI hello (logged; the PKI path comes later) or a malformed message — to
// the Handler. Malformed hellos are counted and logged with the peer
// address, never fatal. A connection closed without a byte is a probe (the
// stick's agent checking that the kiosk is reachable, initramfs/agent): it
// is counted and logged at info, not handed to the Handler, and is not a
// malformed hello. What a hello means for the pool (folding duplicates,
// looking up the PID, recording it) is the Handler's business (package
// kiosk).
//
// On Linux a TCP listener takes a cheaper path (listener_linux.go): each
// accepting goroutine accepts with accept4 on the raw descriptor and reads
// the connection at once, without the netpoller. A whole hello (bytes and
// EOF already there, as nearly always under load) is then parsed and
// handled on the accepting goroutine: no net.Conn, no goroutine, no timer,
// no per-connection socket options or allocations — accept4, two reads and
// close. A connection whose hello is not all there yet continues as before
// on a goroutine of its own with the read deadline (Stats.Waited counts
// them).
package hello

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	wire "github.com/provstick/provstick/internal/hello"
)

// Defaults.
const (
	DefaultReadTimeout    = 5 * time.Second
	DefaultMaxConnections = 256
	DefaultFloodRate      = 100
	DefaultFloodBurst     = 200
)

// Received is one message read from one connection.
type Received struct {
	At    time.Time
	Peer  netip.AddrPort
	Hello *wire.Hello // nil when Err is set
	Err   error       // why the message is malformed (wraps wire.ErrFormat, or ErrTooLarge, or a read error)
}

// ErrTooLarge: the peer sent more than a hello can hold.
var ErrTooLarge = errors.New("hello: message longer than any hello")

// ErrFlood: a source sent hellos faster than Options.FloodRate; its
// connections were closed unread. The Handler sees at most one such
// Received per source per FloodReport, saying how many were dropped.
var ErrFlood = errors.New("hello: flood from one address")

// Options configure a Listener.
type Options struct {
	// Handler receives every message, good or malformed. It runs on the
	// connection's goroutine or on an accepting goroutine, so it should be
	// quick (queue the work): while it runs, that goroutine accepts
	// nothing. Required.
	Handler func(ctx context.Context, r Received)
	// ReadTimeout bounds the whole read of one hello from the moment it
	// is accepted; 0 → 5 s.
	ReadTimeout time.Duration
	// DeferAccept > 0 (Linux, TCP) sets TCP_DEFER_ACCEPT on the socket:
	// the kernel holds a connection on which nothing has arrived yet for
	// about that long (whole seconds, rounded up) before handing it over.
	// A silent connection then costs no descriptor, goroutine or slot
	// while held, and is read with ReadTimeout as any other: it is
	// reported as a timeout after about DeferAccept (the kernel counts it
	// in SYN-ACK retransmissions, so up to a few seconds more) plus
	// ReadTimeout. Off by default: it did not lower the listener's CPU per
	// hello, and it raised the kernel's receive-side work (on loopback
	// charged to the senders) by about 5-10 µs per hello
	// (scripts/bench-kiosk.sh).
	DeferAccept time.Duration
	// MaxConnections bounds connections read at once; further
	// connections wait in the kernel's accept queue. 0 → 256.
	MaxConnections int
	// Logger: malformed hellos at warn, PKI hellos at info, PSK hellos at
	// debug. nil discards.
	Logger *slog.Logger
	// FloodRate and FloodBurst bound the connections accepted from one
	// source address (a token bucket per IP): FloodRate per second on
	// average, FloodBurst at once. AMT says hello at most once a minute,
	// so the defaults (100/s, burst 200) only stop a flood. Connections
	// over the limit are closed unread and counted (Stats.Flooded).
	// FloodRate < 0 turns the limit off.
	FloodRate  float64
	FloodBurst int
	// FloodReport is how often a flooding source is reported to the
	// Handler (Err wrapping ErrFlood); 0 → 10 s.
	FloodReport time.Duration
	// Acceptors is how many goroutines accept on the listener; 0 → 2.
	Acceptors int
}

// Stats counts what the listener read.
type Stats struct {
	Connections uint64 // accepted
	PSK         uint64 // version-2 hellos
	PKI         uint64 // version-3 hellos
	Malformed   uint64 // everything else (too long, bad fields, timeouts)
	// Probes are connections closed without sending a byte: a
	// reachability check (the agent's check_kiosk), not a hello.
	Probes  uint64
	Flooded uint64 // connections closed unread: their source was over FloodRate
	Waited  uint64 // connections read on a goroutine of their own: their hello had not all arrived when accepted (Linux path)
}

// Listener reads hellos.
type Listener struct {
	o                        Options
	log                      *slog.Logger
	conns, psk, pki, malform atomic.Uint64
	flooded, waited, probes  atomic.Uint64
	bufs                     sync.Pool
	flood                    *limiter // nil: no limit
}

// New checks the options and returns a Listener.
func New(o Options) (*Listener, error) {
	if o.Handler == nil {
		return nil, errors.New("hello listener: no handler")
	}
	if o.ReadTimeout <= 0 {
		o.ReadTimeout = DefaultReadTimeout
	}
	if o.MaxConnections <= 0 {
		o.MaxConnections = DefaultMaxConnections
	}
	if o.FloodRate == 0 {
		o.FloodRate = DefaultFloodRate
	}
	if o.FloodBurst <= 0 {
		o.FloodBurst = DefaultFloodBurst
	}
	if o.FloodReport <= 0 {
		o.FloodReport = 10 * time.Second
	}
	if o.Acceptors <= 0 {
		o.Acceptors = 2
	}
	l := &Listener{o: o, log: o.Logger}
	if o.FloodRate > 0 {
		l.flood = newLimiter(o.FloodRate, o.FloodBurst, o.FloodReport)
	}
	if l.log == nil {
		l.log = slog.New(slog.DiscardHandler)
	}
	l.bufs.New = func() any { b := make([]byte, wire.MaxSize+1); return &b }
	return l, nil
}

// Stats returns the counters.
func (l *Listener) Stats() Stats {
	return Stats{Connections: l.conns.Load(), PSK: l.psk.Load(), PKI: l.pki.Load(), Malformed: l.malform.Load(), Flooded: l.flooded.Load(), Waited: l.waited.Load(), Probes: l.probes.Load()}
}

// Serve accepts connections on ln until ctx ends (then it returns nil) or
// ln fails. It closes ln and waits for the connections it is reading. On
// the Linux path (a *net.TCPListener) it accepts on a duplicate of ln's
// descriptor, so closing ln elsewhere does not stop it: end ctx instead.
func (l *Listener) Serve(ctx context.Context, ln net.Listener) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	raw := newRawListener(ln) // nil: not Linux, or not TCP
	defer raw.close()
	stop := context.AfterFunc(ctx, func() { ln.Close(); raw.close() })
	defer stop()
	defer ln.Close()
	if l.o.DeferAccept > 0 {
		if err := deferAccept(ln, l.o.DeferAccept); err != nil {
			l.log.Warn("hello listener: cannot defer accepting until data arrives", "err", err)
		}
	}
	sem := make(chan struct{}, l.o.MaxConnections)
	errc := make(chan error, l.o.Acceptors)
	var accepters sync.WaitGroup
	for range l.o.Acceptors {
		accepters.Go(func() {
			if err := l.accept(ctx, ln, raw.acceptor(), sem, &wg); err != nil {
				errc <- err
				cancel()
			}
		})
	}
	accepters.Wait()
	select {
	case err := <-errc:
		return err
	default:
		return nil
	}
}

// accept is one accepting goroutine: with ra, on the raw path.
func (l *Listener) accept(ctx context.Context, ln net.Listener, ra *rawAcceptor, sem chan struct{}, wg *sync.WaitGroup) error {
	var tempDelay time.Duration
	for {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			return nil
		}
		var (
			c    conn
			fd   int
			peer netip.AddrPort
			err  error
		)
		if ra != nil {
			fd, peer, err = ra.accept()
		} else {
			var nc net.Conn
			if nc, err = ln.Accept(); err == nil {
				c, peer = nc, addrPort(nc.RemoteAddr())
			}
		}
		if err != nil {
			<-sem
			if ctx.Err() != nil {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) ||
				errors.Is(err, syscall.ENOBUFS) || errors.Is(err, syscall.ENOMEM) {
				// Out of descriptors or memory, or a transient error:
				// back off, as net/http does, rather than give up the
				// listener.
				tempDelay = min(max(2*tempDelay, 5*time.Millisecond), time.Second)
				l.log.Warn("hello listener: accept failed, retrying", "err", err, "delay", tempDelay)
				select {
				case <-time.After(tempDelay):
				case <-ctx.Done():
					return nil
				}
				continue
			}
			return fmt.Errorf("accepting hellos on %s: %w", ln.Addr(), err)
		}
		tempDelay = 0
		l.conns.Add(1)
		now := time.Now()
		if l.flood != nil {
			if ok, report := l.flood.allow(peer.Addr(), now); !ok {
				if ra != nil {
					closeFD(fd)
				} else {
					c.Close()
				}
				<-sem
				l.flooded.Add(1)
				if report > 0 {
					r := Received{At: now, Peer: peer, Err: fmt.Errorf("%d connections closed unread over %v/s: %w", report, l.o.FloodRate, ErrFlood)}
					l.log.Warn("hello flood", "peer", peer.Addr().String(), "dropped", report)
					l.o.Handler(ctx, r)
				}
				continue
			}
		}
		if ra != nil {
			// Read what is there; c is nil when the hello was handled.
			var n int
			bp := l.bufs.Get().(*[]byte)
			if c, n, err = readRaw(fd, peer, *bp); c == nil {
				if isProbe((*bp)[:n], err) {
					l.bufs.Put(bp)
					l.probe(peer)
					<-sem
					continue
				}
				r := Received{At: now, Peer: peer}
				if err != nil {
					r.Err = err
				} else {
					r.Hello, r.Err = wire.Parse((*bp)[:n])
				}
				l.bufs.Put(bp)
				l.account(ctx, r)
				l.o.Handler(ctx, r)
				<-sem
				continue
			}
			l.waited.Add(1)
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				defer l.bufs.Put(bp)
				l.serveConn(ctx, c, peer, now, *bp, n)
			}()
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			bp := l.bufs.Get().(*[]byte)
			defer l.bufs.Put(bp)
			l.serveConn(ctx, c, peer, now, *bp, 0)
		}()
	}
}

// conn is what serveConn reads: a net.Conn, or on the raw path the
// connection's descriptor as a pollable *os.File.
type conn interface {
	Read([]byte) (int, error)
	SetReadDeadline(time.Time) error
	Close() error
}

// serveConn reads the rest of one hello from c into buf, whose first n
// bytes were read already, and hands it on. The deadline runs from at, the
// moment c was accepted.
func (l *Listener) serveConn(ctx context.Context, c conn, peer netip.AddrPort, at time.Time, buf []byte, n int) {
	defer c.Close()
	c.SetReadDeadline(at.Add(l.o.ReadTimeout))
	r := Received{At: at, Peer: peer}
	b, err := readAll(c, buf, n)
	switch {
	case isProbe(b, err):
		l.probe(peer)
		return
	case err != nil:
		r.Err = err
	default:
		r.Hello, r.Err = wire.Parse(b)
	}
	l.account(ctx, r)
	l.o.Handler(ctx, r)
}

// probe counts and logs a connection closed without a byte.
func (l *Listener) probe(peer netip.AddrPort) {
	l.probes.Add(1)
	l.log.Info("reachability probe (a connection closed without a hello)", "peer", peer.String())
}

// isProbe reports whether a connection's read was a probe: the peer
// closed (or reset) it without sending a byte. A peer that stays silent
// until the read deadline is not a probe but a malformed hello (AMT never
// does either, so the silent one is the suspicious one).
func isProbe(b []byte, err error) bool {
	if err != nil {
		return errors.Is(err, syscall.ECONNRESET) && errors.Is(err, errNothingRead)
	}
	return len(b) == 0
}

// errNothingRead marks a read error before the first byte.
var errNothingRead = errors.New("nothing read")

// account counts and logs one message.
func (l *Listener) account(ctx context.Context, r Received) {
	switch {
	case r.Err != nil:
		l.malform.Add(1)
		l.log.Warn("malformed hello", "peer", r.Peer.String(), "err", r.Err)
	case r.Hello.Version == wire.VersionPKI:
		l.pki.Add(1)
		l.log.Debug("PKI hello", "peer", r.Peer.String(), "uuid", r.Hello.UUID.String(),
			"retry", r.Hello.RetryCount, "root_hashes", len(r.Hello.RootHashes))
	default:
		l.psk.Add(1)
		// Formatting the fields costs more than the rest of a hello's
		// handling: only when someone reads them.
		if l.log.Enabled(ctx, slog.LevelDebug) {
			l.log.Debug("hello", "peer", r.Peer.String(), "uuid", r.Hello.UUID.String(), "pid", r.Hello.PID, "retry", r.Hello.RetryCount)
		}
	}
}

// readAll reads until EOF into buf after its first n bytes (len(buf) =
// MaxSize+1, so one byte past the largest hello proves the message too
// long).
func readAll(c conn, buf []byte, n int) ([]byte, error) {
	for {
		if n == len(buf) {
			return nil, fmt.Errorf("reading a hello: more than %d bytes: %w", wire.MaxSize, ErrTooLarge)
		}
		m, err := c.Read(buf[n:])
		n += m
		if errors.Is(err, io.EOF) {
			return buf[:n], nil
		}
		if err != nil && n == 0 {
			return nil, fmt.Errorf("reading a hello: %w (%w)", err, errNothingRead)
		}
		if err != nil {
			return nil, fmt.Errorf("reading a hello after %d bytes: %w", n, err)
		}
	}
}
func addrPort(a net.Addr) netip.AddrPort {
	if ta, ok := a.(*net.TCPAddr); ok {
		ap := ta.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	ap, _ := netip.ParseAddrPort(a.String())
	return ap
}
