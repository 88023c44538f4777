package amtsim

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/provstick/provstick/initramfs/heci/amthi"
	"github.com/provstick/provstick/internal/hello"
)

// HelloOptions configure the hello sender of a [NetServer]
// (specs/amt-psk.md §1, §2).
type HelloOptions struct {
	// SCS is a static SCS "host:port"; it overrides State.Net.SCS (what
	// setup.bin's 2/17 and 2/18 hold). With neither, the SCS is found
	// through DNS.
	SCS string
	// DNSServer is the DNS server "host:port" the ME asks for
	// provisionserver.<domain> (the static or DHCP option 6 server).
	DNSServer string
	// Domain overrides the device's DNS suffix (State.DNSSuffix) as the
	// <domain> of provisionserver.<domain>.
	Domain string
	// Port is the SCS port when found through DNS; 0 → 9971.
	Port int
	// LocalAddr is the source IP of hellos (the machine's own address,
	// which the kiosk connects back to); "" → any.
	LocalAddr string
	// TimeScale divides the schedule: 60 makes a minute last a second;
	// 0 → 1 (real time).
	TimeScale float64
	// Timeout bounds one hello (lookup, connect, write); 0 → 10 s.
	Timeout time.Duration
	// Disabled turns the sender off.
	Disabled bool
}

// HelloDelay is the wait before hello number retry (1–14) after the one
// before: 5 hellos one minute apart, 5 ten minutes apart, 5 an hour apart
// (spec §2; retry 0 goes at once). How the groups join is not documented:
// the simulator waits the new group's interval before its first hello.
func HelloDelay(retry int) time.Duration {
	switch {
	case retry <= 0:
		return 0
	case retry <= 4:
		return time.Minute
	case retry <= 9:
		return 10 * time.Minute
	}
	return time.Hour
}

// HelloStats counts what the sender did since the device was created.
type HelloStats struct {
	Sent      int // hellos written (duplicates included)
	Failed    int // attempts that found no SCS or could not connect
	Garbage   int // garbage messages sent (fault injection)
	LastRetry int // retry count of the last attempt; -1 before the first
	Running   bool
}

// ErrNoSCS: neither a static SCS nor a DNS server and domain are known,
// so no hello is sent (spec §1, case 3).
var ErrNoSCS = errors.New("amtsim: no SCS address and no DNS server and domain to find one")

type helloSender struct {
	s *NetServer

	mu     sync.Mutex
	ctx    context.Context
	gen    int // bumped by every (re)start and stop
	timer  *time.Timer
	retry  int
	stats  HelloStats
	closed bool
}

func newHelloSender(s *NetServer) *helloSender {
	return &helloSender{s: s, stats: HelloStats{LastRetry: -1}}
}

func (h *helloSender) scale(d time.Duration) time.Duration {
	f := h.s.opts.Hello.TimeScale
	if f <= 0 {
		f = 1
	}
	return time.Duration(float64(d) / f)
}

// start begins the schedule at retry 0 (power-on, or ME start).
func (h *helloSender) start(ctx context.Context) {
	h.mu.Lock()
	h.ctx = ctx
	h.mu.Unlock()
	h.restart()
}

// restart is the ME reset: the schedule begins again at retry 0.
func (h *helloSender) restart() {
	if h.s.opts.Hello.Disabled {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.ctx == nil || h.closed {
		return
	}
	h.gen++
	if h.timer != nil {
		h.timer.Stop()
	}
	h.retry = 0
	h.stats.Running = true
	gen := h.gen
	h.timer = time.AfterFunc(0, func() { h.fire(gen) })
}

func (h *helloSender) stop() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closed = true
	h.gen++
	h.stats.Running = false
	if h.timer != nil {
		h.timer.Stop()
	}
}

// fire sends hello h.retry and schedules the next one.
func (h *helloSender) fire(gen int) {
	h.mu.Lock()
	if gen != h.gen || h.ctx.Err() != nil {
		h.mu.Unlock()
		return
	}
	ctx, retry := h.ctx, h.retry
	h.mu.Unlock()

	st := h.s.dev.shallow()
	if st.ProvisioningState != amthi.StateIn {
		// Provisioned (or unprovisioned): hellos stop until the next ME
		// start in setup.
		h.mu.Lock()
		if gen == h.gen {
			h.stats.Running = false
		}
		h.mu.Unlock()
		h.s.log.Debug("amtsim: hellos stop", "state", st.ProvisioningState.String())
		return
	}
	sent, garbage, err := h.send(ctx, st, retry)

	h.mu.Lock()
	defer h.mu.Unlock()
	h.stats.Sent += sent
	h.stats.Garbage += garbage
	h.stats.LastRetry = retry
	if err != nil {
		h.stats.Failed++
	}
	if gen != h.gen {
		return
	}
	if retry >= hello.MaxRetryCount {
		h.stats.Running = false
		h.s.log.Info("amtsim: last hello sent; silent until the next ME start", "uuid", st.UUID.String())
		return
	}
	h.retry = retry + 1
	h.timer = time.AfterFunc(h.scale(HelloDelay(h.retry)), func() { h.fire(gen) })
}

// send finds the SCS and writes one hello (more with the duplicate fault).
func (h *helloSender) send(ctx context.Context, st State, retry int) (sent, garbage int, err error) {
	o := h.s.opts.Hello
	timeout := o.Timeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	msg, err := helloMessage(st, retry)
	if err != nil {
		h.s.log.Info("amtsim: no hello", "retry", retry, "uuid", st.UUID.String(), "err", err)
		return 0, 0, err
	}
	addr, err := h.findSCS(ctx, st)
	if err != nil {
		h.s.log.Info("amtsim: no hello", "retry", retry, "uuid", st.UUID.String(), "err", err)
		return 0, 0, err
	}
	dup, garb := h.s.fault.hellos()
	if garb {
		if err := h.write(ctx, addr, h.s.fault.garbageBytes()); err == nil {
			garbage++
		}
	}
	for range 1 + dup {
		if err = h.write(ctx, addr, msg); err != nil {
			break
		}
		sent++
	}
	if err != nil {
		h.s.log.Info("amtsim: hello not delivered", "scs", addr, "retry", retry, "uuid", st.UUID.String(), "err", err)
		return sent, garbage, err
	}
	h.s.log.Info("amtsim: hello sent", "scs", addr, "retry", retry, "uuid", st.UUID.String(), "pid", st.PID)
	return sent, garbage, nil
}

// helloMessage builds the hello the machine would send now: version 2
// with the PID, or version 3 with the user-added root hashes (the PKI
// path) when no PID is stored.
func helloMessage(st State, retry int) ([]byte, error) {
	m := &hello.Hello{
		AdminCredentialsSet: !st.MEBxPassword.Equal("admin"), // the simulator's reading of the flag
		Version:             hello.VersionPSK,
		RetryCount:          uint32(retry),
		UUID:                hello.UUID(st.UUID),
		PID:                 st.PID,
	}
	if st.PID == "" {
		m.Version, m.PID = hello.VersionPKI, ""
		for _, c := range st.Hashes {
			if !c.Active || len(m.RootHashes) == 255 {
				continue
			}
			t := map[amthi.HashAlgorithm]hello.HashType{amthi.HashSHA1: hello.HashSHA1, amthi.HashSHA256: hello.HashSHA256, amthi.HashSHA384: hello.HashSHA384}[c.Algorithm]
			if t != 0 && len(c.Hash) == t.Size() {
				m.RootHashes = append(m.RootHashes, hello.RootHash{Type: t, Hash: c.Hash})
			}
		}
	}
	b, err := m.MarshalBinary()
	if err != nil {
		return nil, fmt.Errorf("building the hello: %w", err)
	}
	return b, nil
}

// findSCS is spec §1: the static address first, else
// provisionserver.<domain> through the DNS server.
func (h *helloSender) findSCS(ctx context.Context, st State) (string, error) {
	o := h.s.opts.Hello
	if o.SCS != "" {
		return o.SCS, nil
	}
	if st.Net.SCS != "" {
		return st.Net.SCS, nil
	}
	domain := o.Domain
	if domain == "" {
		domain = st.DNSSuffix
	}
	if o.DNSServer == "" || domain == "" {
		return "", ErrNoSCS
	}
	name := "provisionserver." + domain
	r := &net.Resolver{
		PreferGo: true,
		Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, o.DNSServer)
		},
	}
	ips, err := r.LookupIP(ctx, "ip4", name)
	if err != nil || len(ips) == 0 {
		return "", fmt.Errorf("looking up %s at %s: %w", name, o.DNSServer, err)
	}
	port := o.Port
	if port == 0 {
		port = hello.Port
	}
	return net.JoinHostPort(ips[0].String(), strconv.Itoa(port)), nil
}

// write opens one TCP connection, writes b and closes (spec §2: the SCS
// answers nothing on it).
func (h *helloSender) write(ctx context.Context, addr string, b []byte) error {
	d := net.Dialer{}
	if la := h.s.opts.Hello.LocalAddr; la != "" {
		ip := net.ParseIP(la)
		if ip == nil {
			return fmt.Errorf("hello source address %q is not an IP address", la)
		}
		d.LocalAddr = &net.TCPAddr{IP: ip}
	}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("connecting to the SCS: %w", err)
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetWriteDeadline(dl)
	}
	if _, err := c.Write(b); err != nil {
		return fmt.Errorf("writing the hello: %w", err)
	}
	return nil
}

// HelloStats returns the hello sender's counters.
func (s *NetServer) HelloStats() HelloStats {
	s.hello.mu.Lock()
	defer s.hello.mu.Unlock()
	return s.hello.stats
}
