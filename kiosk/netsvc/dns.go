// Package netsvc holds the network services of the kiosk's isolated network
// (../../../shared/specs/amt-psk.md §1). For now: a DNS server that answers
// provisionserver.<suffix> (and a configured SCS FQDN) with the kiosk's
// address for the configured suffixes and refuses everything else — an
// isolated network has no upstream to forward to — and, off by default, a
// small DHCP server (dhcp.go) that refuses to start next to another one.
package netsvc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
)

// DNSOptions configure a DNS server.
type DNSOptions struct {
	// Suffixes are the DNS domains of the machines (setup.bin's or DHCP
	// option 15's); provisionserver.<suffix> is answered for each.
	Suffixes []string
	// SCSFQDN is an extra name answered (a configured SCS FQDN); optional.
	SCSFQDN string
	// Answer is the kiosk's address given in the answers (IPv4 → A,
	// IPv6 → AAAA). Required.
	Answer netip.Addr
	// TTL of the answers; 0 → 60 s.
	TTL time.Duration
	// Logger: answered names at debug, refusals at info. nil discards.
	Logger *slog.Logger
}

// DNSStats counts queries.
type DNSStats struct {
	Answered, Refused uint64
}

// DNS answers the kiosk's names.
type DNS struct {
	o                 DNSOptions
	log               *slog.Logger
	names             map[string]bool // lower-case FQDNs with the final dot
	answered, refused atomic.Uint64
}

// NewDNS checks the options.
func NewDNS(o DNSOptions) (*DNS, error) {
	if !o.Answer.IsValid() {
		return nil, errors.New("dns: no answer address")
	}
	if o.TTL <= 0 {
		o.TTL = time.Minute
	}
	d := &DNS{o: o, log: o.Logger, names: map[string]bool{}}
	if d.log == nil {
		d.log = slog.New(slog.DiscardHandler)
	}
	for _, s := range o.Suffixes {
		s = strings.Trim(strings.TrimSpace(s), ".")
		if s == "" {
			continue
		}
		n := "provisionserver." + s
		if _, ok := dns.IsDomainName(n); !ok {
			return nil, fmt.Errorf("dns: suffix %q is not a domain name", s)
		}
		d.names[dns.Fqdn(strings.ToLower(n))] = true
	}
	if f := strings.TrimSpace(o.SCSFQDN); f != "" {
		if _, ok := dns.IsDomainName(f); !ok {
			return nil, fmt.Errorf("dns: SCS FQDN %q is not a domain name", f)
		}
		d.names[dns.Fqdn(strings.ToLower(f))] = true
	}
	if len(d.names) == 0 {
		return nil, errors.New("dns: no suffix and no SCS FQDN to answer")
	}
	return d, nil
}

// Stats returns the counters.
func (d *DNS) Stats() DNSStats {
	return DNSStats{Answered: d.answered.Load(), Refused: d.refused.Load()}
}

// Serve answers on pc (UDP) and, if ln is not nil, on ln (TCP) until ctx
// ends; then it shuts both down and returns nil.
func (d *DNS) Serve(ctx context.Context, pc net.PacketConn, ln net.Listener) error {
	errc := make(chan error, 2)
	var servers []*dns.Server
	if pc != nil {
		servers = append(servers, &dns.Server{PacketConn: pc, Handler: d})
	}
	if ln != nil {
		servers = append(servers, &dns.Server{Listener: ln, Handler: d})
	}
	if len(servers) == 0 {
		return errors.New("dns: nothing to serve on")
	}
	for _, s := range servers {
		go func() { errc <- s.ActivateAndServe() }()
	}
	select {
	case <-ctx.Done():
		for _, s := range servers {
			s.Shutdown()
		}
		return nil
	case err := <-errc:
		for _, s := range servers {
			s.Shutdown()
		}
		return fmt.Errorf("serving DNS: %w", err)
	}
}

// ServeDNS implements dns.Handler.
func (d *DNS) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	m := d.answer(req)
	if err := w.WriteMsg(m); err != nil {
		d.log.Debug("dns: writing the reply", "peer", w.RemoteAddr().String(), "err", err)
	}
}

// answer builds the reply to req.
func (d *DNS) answer(req *dns.Msg) *dns.Msg {
	m := new(dns.Msg)
	if req.Opcode != dns.OpcodeQuery || len(req.Question) != 1 {
		m.SetRcode(req, dns.RcodeRefused)
		d.refused.Add(1)
		return m
	}
	q := req.Question[0]
	name := strings.ToLower(q.Name)
	if !d.names[name] || q.Qclass != dns.ClassINET {
		m.SetRcode(req, dns.RcodeRefused)
		d.refused.Add(1)
		d.log.Info("dns: refused", "name", q.Name, "type", dns.TypeToString[q.Qtype])
		return m
	}
	m.SetReply(req)
	m.Authoritative = true
	hdr := dns.RR_Header{Name: q.Name, Class: dns.ClassINET, Ttl: uint32(d.o.TTL / time.Second)}
	a := d.o.Answer
	switch {
	case q.Qtype == dns.TypeA && a.Is4():
		hdr.Rrtype = dns.TypeA
		m.Answer = append(m.Answer, &dns.A{Hdr: hdr, A: a.AsSlice()})
	case q.Qtype == dns.TypeAAAA && a.Is6():
		hdr.Rrtype = dns.TypeAAAA
		m.Answer = append(m.Answer, &dns.AAAA{Hdr: hdr, AAAA: a.AsSlice()})
	}
	// Other types of a name we own: NOERROR with no data.
	d.answered.Add(1)
	d.log.Debug("dns: answered", "name", q.Name, "type", dns.TypeToString[q.Qtype], "answers", len(m.Answer))
	return m
}
