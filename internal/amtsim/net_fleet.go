package amtsim

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
)

// FleetOptions configure [StartFleet]: many simulated machines in one
// process, for load tests of the kiosk.
type FleetOptions struct {
	// Devices is the number of machines (at least 1).
	Devices int
	// Base is the state every machine starts from. Machine i gets Base's
	// UUID with bytes 12–15 replaced by i+1 (big-endian), so UUIDs differ
	// and sort by index.
	Base State
	// Records are the setup.bin records the machines consumed, one per
	// machine in order (nil: the machines keep Base's PID/PPS and state).
	Records []SetupRecord
	// Host is machine 0's IP address (default 127.0.0.1).
	Host string
	// PerAddress gives machine i the address Host+i, listening on
	// HTTPPort and TLSPort (default 16992/16993, as AMT does) and sending
	// its hellos from that address, so a kiosk that connects back to a
	// hello's source reaches the right machine. Otherwise every machine
	// shares Host and machine i listens on HTTPPort+2i and HTTPPort+2i+1
	// (HTTPPort 0: free ports picked by the system).
	PerAddress        bool
	HTTPPort, TLSPort int
	// Net is every machine's network options (Hello.LocalAddr is set per
	// machine with PerAddress).
	Net NetOptions
	// Prepare, if set, runs for each machine before it starts (to arm
	// faults or set a static SCS before the first hello).
	Prepare func(i int, s *NetServer)
}

// FleetMachine is one machine of a fleet.
type FleetMachine struct {
	Net      *NetServer
	HTTPAddr string // host:port of 16992
	TLSAddr  string // host:port of 16993
}

// Fleet is a set of running machines.
type Fleet struct {
	Machines []FleetMachine
	cancel   context.CancelFunc
}

// StartFleet creates and starts the machines. On error the ones already
// started are stopped.
func StartFleet(ctx context.Context, o FleetOptions) (*Fleet, error) {
	if o.Devices < 1 {
		return nil, fmt.Errorf("starting simulated machines: %d devices, want at least 1", o.Devices)
	}
	if o.Records != nil && len(o.Records) < o.Devices {
		return nil, fmt.Errorf("starting simulated machines: %d devices but %d setup records", o.Devices, len(o.Records))
	}
	if o.Host == "" {
		o.Host = "127.0.0.1"
	}
	host, err := netip.ParseAddr(o.Host)
	if err != nil {
		return nil, fmt.Errorf("starting simulated machines: host %q: %w", o.Host, err)
	}
	if o.PerAddress {
		if o.HTTPPort == 0 {
			o.HTTPPort = PortHTTP
		}
		if o.TLSPort == 0 {
			o.TLSPort = PortTLS
		}
	}
	ctx, cancel := context.WithCancel(ctx)
	f := &Fleet{cancel: cancel, Machines: make([]FleetMachine, 0, o.Devices)}
	addr := host
	for i := range o.Devices {
		st := o.Base.clone()
		binary.BigEndian.PutUint32(st.UUID[12:16], uint32(i+1))
		d := NewDevice(st)
		if o.Records != nil {
			if err := d.ApplySetupRecord(o.Records[i]); err != nil {
				f.Close()
				return nil, fmt.Errorf("machine %d: %w", i, err)
			}
		}
		opts := o.Net
		ip, hp, tp := o.Host, 0, 0
		switch {
		case o.PerAddress:
			if i > 0 {
				addr = addr.Next()
				if !addr.IsValid() || !addr.IsLoopback() && host.IsLoopback() {
					f.Close()
					return nil, fmt.Errorf("machine %d: no address after %s", i, host)
				}
			}
			ip, hp, tp = addr.String(), o.HTTPPort, o.TLSPort
			opts.Hello.LocalAddr = ip
		case o.HTTPPort != 0:
			hp, tp = o.HTTPPort+2*i, o.HTTPPort+2*i+1
		}
		hl, tl, err := ListenNet(ip, hp, tp)
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("machine %d: %w", i, err)
		}
		s := NewNetServer(d, &opts)
		if o.Prepare != nil {
			o.Prepare(i, s)
		}
		s.Start(ctx, hl, tl)
		f.Machines = append(f.Machines, FleetMachine{Net: s, HTTPAddr: hl.Addr().String(), TLSAddr: tl.Addr().String()})
	}
	return f, nil
}

// Close stops every machine.
func (f *Fleet) Close() error {
	f.cancel()
	var errs []error
	for _, m := range f.Machines {
		errs = append(errs, m.Net.Close())
	}
	return errors.Join(errs...)
}
