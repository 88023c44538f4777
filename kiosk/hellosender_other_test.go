//go:build !linux

package kiosk

import (
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
)

// rawSend is the portable fallback of the Linux sender: net.Dial from
// threads goroutines (sources and pin are ignored).
func rawSend(addr netip.AddrPort, n, threads, _ int, _ bool, msg []byte) error {
	var left atomic.Int64
	left.Store(int64(n))
	errs := make(chan error, threads)
	var wg sync.WaitGroup
	for range threads {
		wg.Go(func() {
			for left.Add(-1) >= 0 {
				c, err := net.Dial("tcp", addr.String())
				if err != nil {
					errs <- err
					return
				}
				c.Write(msg)
				c.Close()
			}
		})
	}
	wg.Wait()
	close(errs)
	return <-errs
}
