package kiosk

import (
	"fmt"
	"net/netip"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// rawSend sends n copies of msg to addr from threads OS threads, each
// locked to its goroutine (and with pin, to CPU i mod NumCPU), one TCP
// connection per hello with plain blocking system calls: socket, connect,
// write, close — what an AMT device's stack does, and nothing else: no
// netpoller, no goroutine switches, no allocations. RawSyscall keeps the
// Go scheduler out of the loop; GOMAXPROCS is raised so that a thread
// blocked in connect (a full accept queue) does not hold up the others.
//
// With sources > 1 and a loopback addr, connection k comes from source
// address 127.1.x.y, the (k mod sources)-th, bound before connect with
// IP_BIND_ADDRESS_NO_PORT: a fleet of machines, each with its own
// address. From one address, the connecting side's port search among
// the TIME_WAIT sockets of earlier hellos (__inet_hash_connect,
// tcp_twsk_unique) took more than half of the sender's CPU (81–89 µs per
// hello against 30–40 µs from 1,024 addresses, runs of 20,000 and 100,000
// hellos) — a cost of the test rig that devices on a network, each with a
// port range of its own, do not have.
func rawSend(addr netip.AddrPort, n, threads, sources int, pin bool, msg []byte) error {
	if !addr.Addr().Is4() {
		return fmt.Errorf("hello sender: %v: IPv4 only", addr)
	}
	if sources < 1 || !addr.Addr().IsLoopback() {
		sources = 1
	}
	if sources > 1<<16 {
		return fmt.Errorf("hello sender: %d source addresses: at most %d", sources, 1<<16)
	}
	runtime.GOMAXPROCS(threads + 1)
	var sa unix.RawSockaddrInet4
	sa.Family = unix.AF_INET
	sa.Addr = addr.Addr().As4()
	p := (*[2]byte)(unsafe.Pointer(&sa.Port))
	p[0], p[1] = byte(addr.Port()>>8), byte(addr.Port())
	var left atomic.Int64
	left.Store(int64(n))
	errs := make(chan error, threads)
	var wg sync.WaitGroup
	for i := range threads {
		wg.Go(func() {
			runtime.LockOSThread()
			if pin {
				var set unix.CPUSet
				set.Set(i % runtime.NumCPU())
				if err := unix.SchedSetaffinity(0, &set); err != nil {
					errs <- fmt.Errorf("pinning sender thread %d: %w", i, err)
					return
				}
			}
			var src unix.RawSockaddrInet4
			src.Family = unix.AF_INET
			one := int32(1)
			for {
				k := left.Add(-1)
				if k < 0 {
					break
				}
				fd, _, e := unix.RawSyscall(unix.SYS_SOCKET, unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
				if e != 0 {
					errs <- fmt.Errorf("socket: %w", e)
					return
				}
				if sources > 1 {
					j := int(k) % sources
					src.Addr = [4]byte{127, 1, byte(j >> 8), byte(j)}
					if _, _, e := unix.RawSyscall6(unix.SYS_SETSOCKOPT, fd, unix.IPPROTO_IP, unix.IP_BIND_ADDRESS_NO_PORT, uintptr(unsafe.Pointer(&one)), 4, 0); e != 0 {
						unix.RawSyscall(unix.SYS_CLOSE, fd, 0, 0)
						errs <- fmt.Errorf("IP_BIND_ADDRESS_NO_PORT: %w", e)
						return
					}
					if _, _, e := unix.RawSyscall(unix.SYS_BIND, fd, uintptr(unsafe.Pointer(&src)), unix.SizeofSockaddrInet4); e != 0 {
						unix.RawSyscall(unix.SYS_CLOSE, fd, 0, 0)
						errs <- fmt.Errorf("binding to source %v: %w", netip.AddrFrom4(src.Addr), e)
						return
					}
				}
				if _, _, e := unix.RawSyscall(unix.SYS_CONNECT, fd, uintptr(unsafe.Pointer(&sa)), unix.SizeofSockaddrInet4); e != 0 {
					unix.RawSyscall(unix.SYS_CLOSE, fd, 0, 0)
					errs <- fmt.Errorf("connecting to %v: %w", addr, e)
					return
				}
				if w, _, e := unix.RawSyscall(unix.SYS_WRITE, fd, uintptr(unsafe.Pointer(&msg[0])), uintptr(len(msg))); e != 0 || int(w) != len(msg) {
					unix.RawSyscall(unix.SYS_CLOSE, fd, 0, 0)
					errs <- fmt.Errorf("writing a hello to %v: %d bytes: %w", addr, w, e)
					return
				}
				unix.RawSyscall(unix.SYS_CLOSE, fd, 0, 0)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		fmt.Fprintln(os.Stderr, "hello sender:", err)
		return err
	}
	return nil
}
