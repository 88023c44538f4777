package netsvc

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
	"github.com/insomniacslk/dhcp/dhcpv4/server4"
)

// Probe sends one DISCOVER on the interface (from a raw socket, as a
// client would) and listens for ProbeTimeout: any OFFER means another DHCP
// server is on the network, and Probe returns ErrOtherServer naming it.
// Needs CAP_NET_RAW.
func (d *DHCP) Probe(ctx context.Context) error {
	c, err := nclient4.New(d.o.Interface, nclient4.WithTimeout(d.o.ProbeTimeout), nclient4.WithRetry(1))
	if err != nil {
		return fmt.Errorf("dhcp: probing %s for another DHCP server: %w", d.o.Interface, err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(ctx, d.o.ProbeTimeout+time.Second)
	defer cancel()
	offer, err := c.DiscoverOffer(ctx)
	switch {
	case err == nil:
		return fmt.Errorf("%w: %s offered %s on %s; the kiosk's DHCP server stays off (turn one of them off)",
			ErrOtherServer, offer.ServerIdentifier(), offer.YourIPAddr, d.o.Interface)
	case errors.Is(err, nclient4.ErrNoResponse), errors.Is(err, context.DeadlineExceeded):
		return nil
	default:
		return fmt.Errorf("dhcp: probing %s for another DHCP server: %w", d.o.Interface, err)
	}
}

// Serve probes the interface (see Probe), then answers DHCP on it (UDP
// port 67, bound to the interface) until ctx ends; it returns nil then.
// It refuses to start with ErrOtherServer when another server answered.
func (d *DHCP) Serve(ctx context.Context) error {
	if err := d.load(ctx); err != nil {
		return err
	}
	if err := d.Probe(ctx); err != nil {
		return err
	}
	conn, err := server4.NewIPv4UDPConn(d.o.Interface, &net.UDPAddr{Port: dhcpv4.ServerPort})
	if err != nil {
		return fmt.Errorf("dhcp: listening on %s: %w", d.o.Interface, err)
	}
	srv, err := server4.NewServer(d.o.Interface, nil, func(pc net.PacketConn, peer net.Addr, m *dhcpv4.DHCPv4) {
		r := d.Handle(ctx, m)
		if r == nil {
			return
		}
		if _, err := pc.WriteTo(r.ToBytes(), peer); err != nil {
			d.log.Warn("dhcp: sending a reply", "to", peer.String(), "err", err)
		}
	}, server4.WithConn(conn))
	if err != nil {
		conn.Close()
		return fmt.Errorf("dhcp: starting on %s: %w", d.o.Interface, err)
	}
	d.log.Info("dhcp serving", "interface", d.o.Interface, "range", d.o.RangeStart.String()+"-"+d.o.RangeEnd.String(), "suffix", d.o.Suffix)
	stop := context.AfterFunc(ctx, func() { srv.Close() })
	defer stop()
	err = srv.Serve()
	if ctx.Err() != nil {
		return nil
	}
	return fmt.Errorf("dhcp: serving on %s: %w", d.o.Interface, err)
}
