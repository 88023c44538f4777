package tlspsk

import (
	"context"
	"fmt"
	"net"
)

var _ net.Listener = (*listener)(nil)

type listener struct {
	net.Listener
	config *Config
}

// Accept waits for a connection and returns it as a server-side *Conn; the
// handshake runs on first use.
func (l *listener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return Server(c, l.config), nil
}

// NewListener wraps inner so that Accept returns server-side *Conns.
func NewListener(inner net.Listener, config *Config) net.Listener {
	return &listener{Listener: inner, config: config}
}

// Listen listens on network/laddr (see net.Listen) and returns a listener
// whose Accept returns server-side *Conns.
func Listen(network, laddr string, config *Config) (net.Listener, error) {
	if err := config.check(false); err != nil {
		return nil, err
	}
	l, err := net.Listen(network, laddr)
	if err != nil {
		return nil, fmt.Errorf("tlspsk: listening on %s: %w", laddr, err)
	}
	return NewListener(l, config), nil
}

// Dialer dials TLS-PSK connections. Its DialContext fits
// http.Transport.DialTLSContext:
//
//	tr := &http.Transport{DialTLSContext: (&tlspsk.Dialer{Config: cfg}).DialContext}
type Dialer struct {
	NetDialer *net.Dialer // nil means a zero net.Dialer
	Config    *Config
}

// DialContext connects to addr and runs the handshake under ctx.
func (d *Dialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	nd := d.NetDialer
	if nd == nil {
		nd = &net.Dialer{}
	}
	raw, err := nd.DialContext(ctx, network, addr)
	if err != nil {
		return nil, fmt.Errorf("tlspsk: dialing %s: %w", addr, err)
	}
	c := Client(raw, d.Config)
	if err := c.HandshakeContext(ctx); err != nil {
		_ = raw.Close()
		return nil, fmt.Errorf("tlspsk: handshake with %s: %w", addr, err)
	}
	return c, nil
}
