//go:build !linux

package agent

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
)

// LinkNetwork is the target's own network; the target runs Linux, so
// elsewhere it only resolves and probes (see net_linux.go).
type LinkNetwork struct {
	Sys    string
	Logger *slog.Logger
}

var _ Network = LinkNetwork{}

// Lease needs Linux.
func (LinkNetwork) Lease(context.Context) (*Lease, error) {
	return nil, errors.New("bringing the network up needs Linux")
}

// Resolve asks server with ResolveWith.
func (LinkNetwork) Resolve(ctx context.Context, server netip.Addr, name string) ([]netip.Addr, error) {
	return ResolveWith(ctx, server, name)
}

// Probe connects with ProbeTCP.
func (LinkNetwork) Probe(ctx context.Context, addr netip.AddrPort) error {
	return ProbeTCP(ctx, addr)
}
