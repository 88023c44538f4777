// Command provstick-agent is the program the provisioning stick boots
// into: the kernel runs it as /init from the initramfs the builder packs
// (DESIGN.md §2, issue 8).
//
// It mounts devtmpfs on /dev, proc on /proc, sysfs on /sys and tmpfs on
// /tmp, loads the kernel modules listed in /modules/order (the builder
// writes them in dependency order) with finit_module, and prints a line
// beginning "provstick: ready" on the console. Then it finds its stick (the
// FAT partition labelled PROVSTICK holding provstick/manifest.json),
// mounts it read-write, and runs the agent (package agent): which setup.bin
// record went to this machine, what the ME, DMI, the NICs and the TPM say,
// one line appended to provstick/ledger.jsonl, and the technician's
// message on the console. Finally it unmounts the stick and powers off
// after a countdown.
//
// Kernel command line:
//
//	provstick.mei=ADDRESS      the ME (heci.ParseAddress; default mei:///dev/mei0)
//	provstick.after=poweroff   or reboot, or wait (stay up; for tests)
//	provstick.countdown=N      seconds before powering off (default: the
//	                           stick's provstick/agent.json, else 10)
//	provstick.debug=1          debug logging on the console
//
// It must be built static: CGO_ENABLED=0 go build ./initramfs/agent/cmd/provstick-agent.
// It requires Linux and is only useful as PID 1.
package main

func main() { run() }
