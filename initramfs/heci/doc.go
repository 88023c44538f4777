// Package heci talks to the firmware clients of the Intel Management Engine
// (ME) over HECI, the host-embedded controller interface that Linux exposes
// as /dev/mei0 (specs/heci.md §1).
//
// A [Transport] carries one request message to one firmware client and
// returns its one response, in the spirit of go-tpm's transport.TPM. Three
// kinds of [Device] produce transports, chosen by an address (see
// [ParseAddress]):
//
//   - mei:///dev/mei0 — the real device. Requires Linux and the mei_me
//     driver; root by default. The connect ioctl and the message reads and
//     writes live in heci_linux.go.
//   - unix:///run/me.sock — the stream framing of specs/heci.md §5 over a
//     Unix socket, served by the ME simulator (internal/amtsim).
//   - virtio:org.provstick.mei — the same framing over a QEMU virtio-serial
//     port, found by its name under /sys/class/virtio-ports (no udev).
//
// Inside the agent the address comes from the kernel command line parameter
// provstick.mei=ADDRESS ([AddressFromCmdline]).
//
// The AMT host interface commands are in package amthi and the ME kernel
// (MKHI) firmware version in package mkhi; both only need a Transport.
package heci
