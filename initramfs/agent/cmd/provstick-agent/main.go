// Command provstick-agent is the program the provisioning stick boots
// into: the kernel runs it as /init from the initramfs the builder packs
// (DESIGN.md §2, issue 8).
//
// This is the minimal agent: it mounts devtmpfs on /dev, proc on /proc
// and sysfs on /sys, loads the kernel modules listed in /modules/order
// (the builder writes them in dependency order) with finit_module, prints
// a line beginning "provstick: ready" on the console, and powers the
// machine off. The real agent (find the stick, read setup.bin, ask the ME,
// write the ledger) replaces it.
//
// It must be built static: CGO_ENABLED=0 go build ./initramfs/agent/cmd/provstick-agent.
// It requires Linux and is only useful as PID 1.
package main

func main() { run() }
