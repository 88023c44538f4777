// Command provstick-agent is the program the provisioning stick boots
// into: the kernel runs it as /init from the initramfs the builder packs
// (DESIGN.md §2, issue 8).
//
// It mounts devtmpfs on /dev, proc on /proc, sysfs on /sys and tmpfs on
// /tmp, draws a "working" screen on the machine's display (/dev/tty0:
// vgacon or fbcon; kernel messages are silenced there), loads the kernel
// modules listed in /modules/order with finit_module (each as soon as its
// .modinfo dependencies are in; host-controller and virtio drivers for
// hardware the machine lacks are left out, and loaded after all if the
// stick does not show up), and prints a line beginning "provstick: ready"
// on the serial console. It sets the system clock from the RTC if the
// kernel left it implausible. Then it asks the machine (ME over HECI,
// DMI, NIC MACs, TPM EK) while it looks for its stick (the FAT partition
// labelled PROVSTICK holding provstick/manifest.json), mounts the stick
// read-write, and runs the agent (package agent): which setup.bin record
// went to this machine, one line appended to provstick/ledger.jsonl, and
// the technician's screen. Finally it unmounts the stick and powers off
// after a countdown shown on the screen.
//
// Serial console markers (tests and scripts/bench-agent.sh time them):
// "provstick: ready", "provstick: ledger: writing" (just before the
// append), "provstick: ledger: line N … written" (file and directory
// fsynced), "provstick: screen drawn".
//
// Kernel command line:
//
//	provstick.mei=ADDRESS      the ME (heci.ParseAddress; default mei:///dev/mei0)
//	provstick.after=poweroff   or reboot, or wait (stay up; for tests)
//	provstick.countdown=N      seconds before powering off (default: the
//	                           stick's provstick/agent.json, else 10)
//	provstick.debug=1          debug logging on the console
//	provstick.screen=PATH      the technician's screen (default /dev/tty0; none: off)
//	provstick.test.hold=NAME   tests only: before the ledger write, wait for
//	                           a byte on the virtio-serial port NAME
//
// The stick's provstick/agent.json (agent.Conf) may set "countdown"
// (seconds), "me_wait" (seconds to wait for the ME, default 30),
// "activate" (host-based activation to client control mode before the
// ledger line, whose outcome the line records; serial marker
// "provstick: activation: …") and "qr" (true: once the line is written,
// the technician's screen shows it as a QR code, agent.QR; serial marker
// "provstick: qr: …").
//
// It must be built static: CGO_ENABLED=0 go build ./initramfs/agent/cmd/provstick-agent.
// It requires Linux and is only useful as PID 1.
package main

func main() { run() }
