package agent

// TestVMAgent builds one stick image with the builder (default recipe, the
// real agent, 6 records numbered from 101) and boots it four times in a
// row under QEMU (TCG), each time as a different simulated machine,
// consuming records in place in the image the way the BIOS does:
//
//	boot 1: SeaBIOS (legacy), machine A, swtpm — 1 consumed → normal, record 101
//	boot 2: OVMF (UEFI),      machine B, swtpm — 1 consumed → normal, record 102
//	boot 3: SeaBIOS,          machine C, swtpm — 2 consumed → multiple-consumed, record 104, 103 skipped
//	boot 4: OVMF,             machine D, no TPM — setup.bin put back as after boot 2 → counter-rolled-back
//
// After each boot the ledger is read back from the image with mtools and
// parsed by our reader: exactly one new line, earlier lines byte for byte
// unchanged, with the record, PID, the simulator's UUID and AMT version,
// and swtpm's EK hash as computed on the host from the same swtpm state
// (the agent's ReadEK over swtpm's TCP interface). Every boot but boot 3
// takes a screenshot of the technician's screen over the QEMU monitor
// (screendump, PPM → PNG, kept under PROVSTICK_ARTIFACTS if set) and reads
// it with tesseract.
//
// Boots 2 and 3 have agent.json "qr": true. Both show the QR code: boot 2
// on OVMF's 1280×800 framebuffer, boot 3 under SeaBIOS on the 1024×768
// VESA framebuffer that the builder's syslinux entry asks for when the
// recipe has agent.qr (builder.SyslinuxConfig, vga=0x317; boot 1 has the
// text-mode entry of the recipe as shipped, qr off). zbarimg (zbar-tools),
// a decoder independent of ours, reads the code from the screenshot,
// ledger.DecodeQR turns the text into a line, and that line must be byte
// for byte ledger.ForQR's line of the ledger line read back from the
// image. (VGA text mode, 80×25, has no room for a code: TestQRFit checks
// the "No QR code" line.)
//
// Guest view: the image is a USB stick (qemu-xhci + usb-storage,
// /dev/sda, FAT on /dev/sda1 labelled PROVSTICK); the ME simulator
// listens on a Unix socket that QEMU connects to as the chardev of a
// virtserialport named org.provstick.mei (/dev/vport*p1 in the guest);
// swtpm is a tpm-tis device (/dev/tpm0, /dev/tpmrm0); the display is
// -vga std with -display none (vgacon text mode under SeaBIOS, or vesafb +
// fbcon with vga=0x317; efifb + fbcon under OVMF). The kernel command line, patched here in both boot
// loaders' entries, adds provstick.mei=virtio:org.provstick.mei.
//
// Needs qemu-system-x86, ovmf, swtpm, mtools, syslinux, syslinux-common,
// systemd-boot-efi, tesseract-ocr and the unpacked Debian kernel package
// that scripts/install-deps.sh puts in
// ${XDG_CACHE_HOME:-$HOME/.cache}/provstick/vm-kernel (VMTEST_KERNEL_DIR
// overrides it; VMTEST_QEMU the QEMU binary). Skipped with -short.

import (
	"bytes"
	"fmt"
	"image"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/provstick/provstick/builder"
	"github.com/provstick/provstick/internal/ledger"
)

// bootResult is what one boot measured.
type bootResult struct {
	name                   string
	ready, ledgerAt, total time.Duration
	agentLine              string // the agent's "ledger: line …" console line
	// From the guest's own lines: time since boot at "ready" and the
	// module loading before it; init start → fsync, Run, the ME part.
	sinceBoot, modules, initToFsync, run, me time.Duration
	screenshot, ocrText                      string
}

func TestVMAgent(t *testing.T) {
	if testing.Short() {
		t.Skip("boots a VM four times under TCG; skipped with -short")
	}
	dir := t.TempDir()
	s := buildStick(t, dir, 6, 101, "provstick.mei=virtio:org.provstick.mei")
	t.Logf("initramfs (zstd) on the stick: %d bytes", len(s.get(t, "provstick/initrd.img")))
	// A countdown long enough to take the screenshot; the test quits QEMU
	// through the monitor once it has it.
	var results []bootResult

	type step struct {
		name     string
		uefi     bool
		consume  int
		restore  []byte
		tpm      bool
		shot     bool
		qr       bool
		wantCase ledger.Case
		wantRec  int
		wantSkip []int
		wantOCR  []string
	}
	var afterBoot2 []byte
	steps := []*step{
		{name: "1-legacy-A", consume: 1, tpm: true, shot: true, wantCase: ledger.CaseNormal, wantRec: 101,
			wantOCR: []string{"DONE", "Record 101", "Remove the stick", "Powering off in"}},
		{name: "2-uefi-B", uefi: true, consume: 1, tpm: true, shot: true, qr: true, wantCase: ledger.CaseNormal, wantRec: 102,
			wantOCR: []string{"DONE", "Record 102", "Remove the stick", "QR code: this ledger line", "Powering off in"}},
		{name: "3-legacy-C-multiple", consume: 2, tpm: true, shot: true, qr: true, wantCase: ledger.CaseMultiple, wantRec: 104, wantSkip: []int{103},
			wantOCR: []string{"ATTENTION", "records were consumed", "Record 104", "QR code: this ledger line", "Powering off in"}},
		{name: "4-uefi-D-rollback", uefi: true, shot: true, wantCase: ledger.CaseRollback,
			wantOCR: []string{"PROBLEM", "LOWER than the ledger", "Powering off in"}},
	}
	var prev []byte
	for i, st := range steps {
		if st.name == "4-uefi-D-rollback" {
			st.restore = afterBoot2
		}
		if !t.Run(st.name, func(t *testing.T) {
			if st.restore != nil {
				s.restoreSetupBin(t, st.restore)
			}
			s.consume(t, st.consume)
			pid := ""
			if st.wantRec != 0 {
				pid = s.psks[st.wantRec-101].PID.String()
			}
			m := newMachine(t, st.name, byte(0xA0+i), pid, st.tpm)
			countdown := "0"
			if st.shot {
				countdown = "600"
			}
			// The countdown comes from provstick/agent.json (the
			// recipe's agent.countdown) when the command line has none.
			if !st.uefi {
				s.putSyslinux(t, st.qr, "provstick.mei=virtio:org.provstick.mei")
			}
			s.put(t, "provstick/agent.json", fmt.Appendf(nil, `{"format":"provstick-agent/1","after":"poweroff","countdown":%s,"qr":%t}`, countdown, st.qr))
			r := bootOnce(t, s.img, st.uefi, m, st.shot, st.wantOCR)
			r.name = st.name
			results = append(results, r)

			raw, l := readLedgerImage(t, s.img, false)
			if !bytes.HasPrefix(raw, prev) {
				t.Fatalf("earlier ledger lines changed:\nbefore:\n%s\nafter:\n%s", prev, raw)
			}
			if len(l.Records) != i+1 || len(l.Findings) != 0 {
				t.Fatalf("ledger: %d records (want %d), findings %v\n%s", len(l.Records), i+1, l.Findings, raw)
			}
			prev = raw
			rec := l.Last()
			t.Logf("ledger line: %s", strings.TrimSpace(string(raw[bytes.LastIndexByte(raw[:len(raw)-1], '\n')+1:])))
			if rec.Seq != uint64(i+1) || rec.Case != st.wantCase || rec.Record != st.wantRec || rec.Stick != s.id {
				t.Errorf("seq %d case %s record %d stick %s; want %d %s %d %s", rec.Seq, rec.Case, rec.Record, rec.Stick, i+1, st.wantCase, st.wantRec, s.id)
			}
			if st.wantRec != 0 && rec.PID != s.psks[st.wantRec-101].PID.Display() {
				t.Errorf("PID %q, want %q", rec.PID, s.psks[st.wantRec-101].PID.Display())
			}
			if fmt.Sprint(rec.Skipped) != fmt.Sprint(st.wantSkip) && len(st.wantSkip)+len(rec.Skipped) > 0 {
				t.Errorf("skipped %v, want %v", rec.Skipped, st.wantSkip)
			}
			if rec.AMT == nil || rec.AMT.UUID != m.uuid() || rec.AMT.AMTVersion != "11.8.50" || rec.AMT.ProvisioningState != "in" {
				t.Errorf("AMT %+v; want UUID %s, AMT 11.8.50, state in", rec.AMT, m.uuid())
			}
			if rec.DMI == nil || rec.DMI.Vendor != "QEMU" {
				t.Errorf("DMI %+v; want QEMU's", rec.DMI)
			}
			if st.tpm {
				want := m.hostEK(t)
				if rec.TPM == nil || rec.TPM.EKSHA256 != want {
					t.Errorf("TPM %+v; want the EK hash %s computed on the host from the same swtpm state", rec.TPM, want)
				} else {
					t.Logf("EK SHA-256 %s matches swtpm's, read on the host", want)
				}
			} else if !hasMissing(rec, "tpm") {
				t.Errorf("no TPM attached but not named missing: %v", rec.Missing)
			}
			if hasMissing(rec, "clock") {
				t.Errorf("QEMU's RTC has the host's time, but the clock is named missing: %v", rec.Missing)
			}
			if d := time.Since(rec.Time); d < -time.Hour || d > time.Hour {
				t.Errorf("ledger time %v is not near now", rec.Time)
			}
			if i == 1 {
				afterBoot2 = s.setupBin(t)
			}
			if st.qr {
				checkQR(t, r.screenshot, raw)
			}
		}) {
			break
		}
	}
	for _, r := range results {
		t.Logf("%-22s QEMU start → ready %5.1f s, → ledger fsync %5.1f s, → exit %5.1f s; firmware+loader %5.1f s, kernel to init %5.1f s, modules %5.1f s; agent: %s", r.name,
			r.ready.Seconds(), r.ledgerAt.Seconds(), r.total.Seconds(), (r.ready - r.sinceBoot).Seconds(), (r.sinceBoot - r.modules).Seconds(), r.modules.Seconds(), r.agentLine)
		fmt.Printf("BENCH boot=%s qemu_to_ready=%.2f qemu_to_fsync=%.2f firmware_loader=%.2f kernel_to_init=%.2f modules=%.2f agent_init_to_fsync=%.2f agent_run=%.2f agent_me=%.2f\n", r.name,
			r.ready.Seconds(), r.ledgerAt.Seconds(), (r.ready - r.sinceBoot).Seconds(), (r.sinceBoot - r.modules).Seconds(), r.modules.Seconds(), r.initToFsync.Seconds(), r.run.Seconds(), r.me.Seconds())
	}
	t.Logf("load average: %s", loadAvg())
}

// checkQR reads the QR code in the screenshot png with zbarimg and checks
// that it holds ledger.ForQR's line of the last line of the ledger raw
// (as read back from the image), byte for byte, and that the line
// verifies and names the full line.
func checkQR(t *testing.T, png string, raw []byte) {
	t.Helper()
	if png == "" {
		t.Fatal("no screenshot to read the QR code from")
	}
	text := zbarFile(t, png)
	line, err := ledger.DecodeQR(text)
	if err != nil {
		t.Fatalf("zbarimg read %q from %s: %v", text, png, err)
	}
	lines := bytes.Split(bytes.TrimSuffix(raw, []byte("\n")), []byte("\n"))
	full, err := ledger.Unmarshal(lines[len(lines)-1])
	if err != nil {
		t.Fatal(err)
	}
	want, err := ledger.Marshal(ledger.ForQR(full, full.Sum, false))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(line, bytes.TrimSuffix(want, []byte("\n"))) {
		t.Fatalf("the QR code holds\n%s\nwant (ForQR of the line on the stick)\n%s", line, want)
	}
	got, err := ledger.Unmarshal(line)
	if err != nil || !ledger.SameLine(got.FullSum, full.Sum) {
		t.Fatalf("the QR line does not verify or name the line %s: %v, %+v", full.Sum, err, got)
	}
	t.Logf("QR code read by zbarimg from %s: %d characters → %d-byte line (the line on the stick: %d bytes), names %s", png, len(text), len(line), len(lines[len(lines)-1]), got.FullSum)
}

// bootOnce boots img as machine m and waits for the ledger line; with
// shot it waits for the technician's screen, screenshots it, checks the
// OCR text for each of wantOCR (retrying a few times) and quits QEMU.
func bootOnce(t *testing.T, img string, uefi bool, m *machine, shot bool, wantOCR []string) bootResult {
	t.Helper()
	var r bootResult
	drawn := make(chan struct{})
	var once sync.Once
	v := startVM(t, vmOpts{uefi: uefi, m: m, img: img, onLine: func(v *vm, line string) {
		if strings.Contains(line, "provstick: screen drawn") {
			once.Do(func() { close(drawn) })
		}
	}})
	exited := make(chan error, 1)
	go func() { exited <- v.wait() }()
	var err error
	if shot {
		select {
		case <-drawn:
			r.screenshot, r.ocrText, err = checkScreen(t, v, wantOCR)
			v.monitor("quit")
			<-exited
		case err = <-exited:
			err = fmt.Errorf("QEMU exited before the screen was drawn: %v", err)
		}
	} else {
		err = <-exited
	}
	r.total = time.Since(v.start)
	r.ready, r.ledgerAt = v.mark("provstick: ready"), v.mark("provstick: ledger: line")
	out := v.output()
	for _, l := range strings.Split(out, "\n") {
		if i := strings.Index(l, "provstick: ledger: line"); i >= 0 {
			r.agentLine = strings.TrimSpace(l[i+len("provstick: "):])
			if m := agentLineRE.FindStringSubmatch(l); m != nil {
				r.run, r.me, r.initToFsync = dur(m[1]), dur(m[2]), dur(m[3])
			}
		}
		if m := readyLineRE.FindStringSubmatch(l); m != nil {
			r.modules, r.sinceBoot = dur(m[1]), dur(m[2])
		}
	}
	if err != nil || r.ledgerAt == 0 {
		t.Fatalf("boot: %v after %v; console:\n%s", err, r.total, out)
	}
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, "provstick:") || strings.HasPrefix(l, "  ") {
			t.Log(l)
		}
	}
	return r
}

// checkScreen takes screenshots until the OCR text has every wanted
// string (fbcon may still be drawing), at most 5 tries.
func checkScreen(t *testing.T, v *vm, want []string) (png, text string, err error) {
	t.Helper()
	for try := range 5 {
		img, p, err := v.screenshot(fmt.Sprintf("screen%d", try))
		if err != nil {
			return "", "", err
		}
		text = ocr(t, textPart(img))
		missing := ""
		for _, w := range want {
			if !ocrHas(text, w) {
				missing = w
				break
			}
		}
		if missing == "" {
			t.Logf("screenshot %s (%dx%d); OCR found %q", p, img.Bounds().Dx(), img.Bounds().Dy(), want)
			return p, text, nil
		}
		if try == 4 {
			t.Errorf("screenshot %s: OCR did not find %q in:\n%s", p, missing, text)
			return p, text, nil
		}
		time.Sleep(time.Second)
	}
	return "", text, nil
}

// textPart is img left of a QR code, if there is one (tesseract reads
// the code's modules as rows of garbage and loses the text beside it): a
// column more than 40 % white is the code's quiet zone; text is never
// that dense.
func textPart(img image.Image) image.Image {
	b := img.Bounds()
	for x := b.Min.X; x < b.Max.X; x++ {
		n := 0
		for y := b.Min.Y; y < b.Max.Y; y++ {
			r, g, bl, _ := img.At(x, y).RGBA()
			if min(r, g, bl)>>8 >= 0xf0 {
				n++
			}
		}
		if n*10 > b.Dy()*4 {
			if sub, ok := img.(interface {
				SubImage(image.Rectangle) image.Image
			}); ok && x > b.Min.X {
				return sub.SubImage(image.Rect(b.Min.X, b.Min.Y, x, b.Max.Y))
			}
			break
		}
	}
	return img
}

var (
	agentLineRE = regexp.MustCompile(`written in (\S+), of which ME (\S+); init start to fsync (\S+),`)
	readyLineRE = regexp.MustCompile(`provstick: ready: .* failed, (\S+) after init started, (\S+) since boot`)
)

func dur(s string) time.Duration {
	d, _ := time.ParseDuration(s)
	return d
}

func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	return strings.Join(f[:min(3, len(f))], " ")
}

// putSyslinux writes the syslinux.cfg the builder makes for the shipped
// default recipe with agent.qr set to qr (the stick was built with it
// off), extra added to the command line as patchCmdline does.
func (s *vmStick) putSyslinux(t *testing.T, qr bool, extra string) {
	t.Helper()
	y, err := os.ReadFile("../../images/default.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if qr {
		if bytes.Count(y, []byte("\n  qr: false\n")) != 1 {
			t.Fatal(`images/default.yaml has no one "qr: false" line to turn on`)
		}
		y = bytes.Replace(y, []byte("\n  qr: false\n"), []byte("\n  qr: true\n"), 1)
	}
	r, err := builder.ParseRecipe(bytes.NewReader(y), "default.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cfg := builder.SyslinuxConfig(r)
	if bytes.Contains(cfg, []byte(" vga=")) != qr {
		t.Fatalf("syslinux.cfg with agent.qr %t:\n%s", qr, cfg)
	}
	if !bytes.Contains(cfg, []byte("  APPEND ")) {
		t.Fatalf("syslinux.cfg has no APPEND line:\n%s", cfg)
	}
	s.put(t, builder.SyslinuxConfigPath, bytes.Replace(cfg, []byte("  APPEND "), []byte("  APPEND "+extra+" "), 1))
}
