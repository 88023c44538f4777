package agent

// Helpers for the VM tests (vm_test.go, powercut_vm_test.go): build the
// agent and a stick image once, patch the boot command line, run QEMU
// with SeaBIOS or OVMF, swtpm and the ME simulator, talk to its monitor,
// take screenshots and read them with tesseract.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/provstick/provstick/builder"
	"github.com/provstick/provstick/internal/amtsim"
	"github.com/provstick/provstick/internal/ledger"
	"github.com/provstick/provstick/setupbin"
	"github.com/provstick/provstick/setupbin/setupbintest"
)

const (
	ovmfCode = "/usr/share/OVMF/OVMF_CODE_4M.fd"
	ovmfVars = "/usr/share/OVMF/OVMF_VARS_4M.fd"
)

func vmKernelDir(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("VMTEST_KERNEL_DIR")
	if dir == "" {
		cache, err := os.UserCacheDir()
		if err != nil {
			t.Fatal(err)
		}
		dir = filepath.Join(cache, "provstick", "vm-kernel")
	}
	if _, err := builder.FindKernel(dir); err != nil {
		t.Fatalf("%v (scripts/install-deps.sh unpacks one)", err)
	}
	return dir
}

func qemuBin(t *testing.T) string {
	t.Helper()
	q := os.Getenv("VMTEST_QEMU")
	if q == "" {
		q = "qemu-system-x86_64"
	}
	if _, err := exec.LookPath(q); err != nil {
		t.Fatalf("%s not found (apt-get install qemu-system-x86): %v", q, err)
	}
	return q
}

func run(t *testing.T, name string, args ...string) []byte {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return out
}

// offsetFile addresses a file inside the image.
type offsetFile struct {
	f   *os.File
	off int64
}

func (o offsetFile) ReadAt(b []byte, off int64) (int, error)  { return o.f.ReadAt(b, o.off+off) }
func (o offsetFile) WriteAt(b []byte, off int64) (int, error) { return o.f.WriteAt(b, o.off+off) }
func (o offsetFile) Sync() error                              { return o.f.Sync() }

var (
	agentOnce sync.Once
	agentPath string
	agentErr  error
)

// agentBinary builds the static agent once per test binary.
func agentBinary(t *testing.T) string {
	t.Helper()
	agentOnce.Do(func() {
		dir, err := os.MkdirTemp("", "provstick-agent-vmtest-")
		if err != nil {
			agentErr = err
			return
		}
		agentPath = filepath.Join(dir, "provstick-agent")
		cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", agentPath, "./cmd/provstick-agent")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
		if out, err := cmd.CombinedOutput(); err != nil {
			agentErr = fmt.Errorf("building the agent: %w\n%s", err, out)
		}
	})
	if agentErr != nil {
		t.Fatal(agentErr)
	}
	return agentPath
}

func TestMain(m *testing.M) {
	if role := os.Getenv(envKioskNetRole); role != "" {
		// This binary re-executed inside a network namespace (vm_kiosk_test.go).
		os.Exit(kioskNetRole(role))
	}
	code := m.Run()
	if agentPath != "" {
		os.RemoveAll(filepath.Dir(agentPath))
	}
	os.Exit(code)
}

// vmStick is a built image with setup.bin's place in it.
type vmStick struct {
	img   string
	sb    []byte // setup.bin as built
	sbOff int64  // its offset in the image
	psks  []setupbin.PSK
	id    string
}

// buildStick builds the default recipe's image with n records numbered
// from first, adds provstick/pids.json (the builder does not write it
// yet) and appends extra to the kernel command line of both boot loaders.
func buildStick(t *testing.T, dir string, n, first int, extra string) *vmStick {
	t.Helper()
	return buildStickRecipe(t, dir, "../../images/default.yaml", n, first, extra)
}

// buildStickRecipe is buildStick with another recipe.
func buildStickRecipe(t *testing.T, dir, recipePath string, n, first int, extra string) *vmStick {
	t.Helper()
	sb, psks := setupbintest.File(t, setupbintest.Options{Records: n, Seed: 42})
	recipe, err := builder.LoadRecipe(recipePath)
	if err != nil {
		t.Fatal(err)
	}
	b, err := builder.New(recipe, &builder.Options{KernelDir: vmKernelDir(t), Agent: agentBinary(t), NoHash: true})
	if err != nil {
		t.Fatal(err)
	}
	s := &vmStick{img: filepath.Join(dir, "stick.img"), sb: sb, psks: psks, id: "vm-0001"}
	if _, err := b.Build(t.Context(), s.img, builder.Stick{ID: s.id, SetupBin: sb, FirstRecord: first}); err != nil {
		t.Fatal(err)
	}
	var pl pidList
	pl.Format = pidsFormat
	for _, p := range psks {
		pl.PIDs = append(pl.PIDs, p.PID.String())
	}
	pj, _ := json.Marshal(pl)
	s.put(t, "provstick/pids.json", pj)
	s.patchCmdline(t, extra)

	whole, err := os.ReadFile(s.img)
	if err != nil {
		t.Fatal(err)
	}
	at := bytes.Index(whole, sb[:setupbin.ChunkSize])
	if at < 0 {
		t.Fatal("setup.bin not found in the image")
	}
	s.sbOff = int64(at)
	return s
}

// put writes a file into the image with mtools.
func (s *vmStick) put(t *testing.T, name string, data []byte) {
	t.Helper()
	tmp := filepath.Join(t.TempDir(), "put")
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		t.Fatal(err)
	}
	run(t, "mcopy", "-o", "-i", s.img+"@@1M", tmp, "::"+name)
}

// get reads a file from the image with mtools (nil if absent).
func (s *vmStick) get(t *testing.T, name string) []byte {
	t.Helper()
	out, err := exec.Command("mcopy", "-n", "-i", s.img+"@@1M", "::"+name, "-").Output()
	if err != nil {
		return nil
	}
	return out
}

// patchCmdline appends extra to the kernel command line of whichever boot
// loader entries the image has.
func (s *vmStick) patchCmdline(t *testing.T, extra string) {
	t.Helper()
	found := 0
	for _, f := range []struct{ path, key string }{
		{"syslinux/syslinux.cfg", "  APPEND "},
		{"loader/entries/provstick.conf", "\noptions "},
	} {
		b := s.get(t, f.path)
		if b == nil {
			continue
		}
		if !bytes.Contains(b, []byte(f.key)) {
			t.Fatalf("%s has no %q line:\n%s", f.path, strings.TrimSpace(f.key), b)
		}
		b = bytes.Replace(b, []byte(f.key), []byte(f.key+extra+" "), 1)
		s.put(t, f.path, b)
		found++
	}
	if found == 0 {
		t.Fatal("the image has neither syslinux/syslinux.cfg nor loader/entries/provstick.conf")
	}
}

// consume takes n records the way the BIOS does, in place in the image.
func (s *vmStick) consume(t *testing.T, n int) {
	t.Helper()
	f, err := os.OpenFile(s.img, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for range n {
		if _, err := setupbin.Consume(offsetFile{f, s.sbOff}, int64(len(s.sb))); err != nil {
			t.Fatal(err)
		}
	}
}

// setupBin returns setup.bin's bytes as they are in the image now.
func (s *vmStick) setupBin(t *testing.T) []byte {
	t.Helper()
	f, err := os.Open(s.img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, len(s.sb))
	if _, err := f.ReadAt(b, s.sbOff); err != nil {
		t.Fatal(err)
	}
	return b
}

// restoreSetupBin puts old bytes back (someone restoring a copy).
func (s *vmStick) restoreSetupBin(t *testing.T, old []byte) {
	t.Helper()
	f, err := os.OpenFile(s.img, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(old, s.sbOff); err != nil {
		t.Fatal(err)
	}
}

// readLedgerImage reads the ledger from an image (or a bare partition
// when part is true) with mtools, and parses it with our reader.
func readLedgerImage(t *testing.T, img string, part bool) ([]byte, *ledger.Log) {
	t.Helper()
	spec := img + "@@1M"
	if part {
		spec = img
	}
	raw, err := exec.Command("mcopy", "-n", "-i", spec, "::"+ledger.FileName, "-").Output()
	if err != nil {
		t.Fatalf("mcopy %s from %s: %v", ledger.FileName, img, err)
	}
	l, err := ledger.Read(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	return raw, l
}

// machine is one simulated target: its ME and, optionally, its TPM.
type machine struct {
	name string
	dev  *amtsim.Device
	sock string // the ME simulator's Unix socket
	tpm  string // swtpm state directory; empty: no TPM
}

func newMachine(t *testing.T, name string, uuidByte byte, pid string, withTPM bool) *machine {
	t.Helper()
	st := inSetup(t, pid)
	st.UUID[15] = uuidByte
	st.UUID[0] = uuidByte
	addr, dev := simulator(t, st)
	m := &machine{name: name, dev: dev, sock: strings.TrimPrefix(addr, "unix://")}
	if withTPM {
		m.tpm = t.TempDir()
	}
	return m
}

func (m *machine) uuid() string { return m.dev.State().UUID.String() }

// hostEK reads the EK of the machine's swtpm state on the host with the
// agent's own EK code over swtpm's TCP interface (a second swtpm process
// on the same state directory, after QEMU's has exited).
func (m *machine) hostEK(t *testing.T) string {
	t.Helper()
	tpm := swtpmAt(t, m.tpm)
	defer tpm.Close()
	ek, err := ReadEK(t.Context(), tpm)
	if err != nil {
		t.Fatal(err)
	}
	return ek.EKSHA256
}

// vmOpts is one boot.
type vmOpts struct {
	uefi    bool
	m       *machine
	img     string
	extra   []string      // more QEMU arguments
	netns   string        // run QEMU in this network namespace (ip netns exec)
	timeout time.Duration // whole boot; default 6 minutes
	// onLine sees each console line as it arrives (from the reader
	// goroutine); the VM handle lets it take screenshots or kill QEMU.
	onLine func(v *vm, line string)
}

// vm is a running QEMU.
type vm struct {
	t       *testing.T
	dir     string
	cmd     *exec.Cmd
	start   time.Time
	monPath string

	mu      sync.Mutex
	console bytes.Buffer
	marks   map[string]time.Duration // first time each marker was seen

	waitFn   func() error
	waitOnce sync.Once
	waitErr  error
	stopTPM  func()
}

var markers = []string{"provstick: ready", "provstick: ledger: writing", "provstick: ledger: line", "provstick: screen drawn", "provstick: ledger: holding"}

// startVM starts QEMU (and swtpm if the machine has one).
func startVM(t *testing.T, o vmOpts) *vm {
	t.Helper()
	dir := t.TempDir()
	v := &vm{t: t, dir: dir, monPath: filepath.Join(dir, "mon.sock"), marks: map[string]time.Duration{}}
	args := []string{
		"-nodefaults", "-display", "none", "-no-reboot", "-accel", "tcg", "-machine", "q35",
		"-m", "512", "-smp", "1", "-serial", "stdio", "-vga", "std",
		"-monitor", "unix:" + v.monPath + ",server=on,wait=off",
		"-device", "qemu-xhci,id=xhci",
		"-drive", "if=none,id=stick,format=raw,file=" + o.img,
		"-device", "usb-storage,bus=xhci.0,drive=stick,bootindex=1",
		"-device", "virtio-serial-pci",
	}
	if o.m != nil && o.m.sock != "" {
		args = append(args, "-chardev", "socket,id=mei,path="+o.m.sock, "-device", "virtserialport,chardev=mei,name=org.provstick.mei")
	} else {
		args = append(args, "-chardev", "null,id=mei", "-device", "virtserialport,chardev=mei,name=org.provstick.mei")
	}
	if o.uefi {
		vars := filepath.Join(dir, "OVMF_VARS.fd")
		b, err := os.ReadFile(ovmfVars)
		if err != nil {
			t.Fatalf("reading OVMF (apt-get install ovmf): %v", err)
		}
		os.WriteFile(vars, b, 0o644)
		args = append(args, "-drive", "if=pflash,format=raw,unit=0,readonly=on,file="+ovmfCode,
			"-drive", "if=pflash,format=raw,unit=1,file="+vars)
	}
	if o.m != nil && o.m.tpm != "" {
		ctrl, stop := startSwtpmUnix(t, o.m.tpm)
		v.stopTPM = stop
		args = append(args, "-chardev", "socket,id=chrtpm,path="+ctrl,
			"-tpmdev", "emulator,id=tpm0,chardev=chrtpm", "-device", "tpm-tis,tpmdev=tpm0")
	}
	args = append(args, o.extra...)
	timeout := o.timeout
	if timeout == 0 {
		timeout = 6 * time.Minute
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	if o.netns != "" {
		// ip netns exec execs QEMU in place: the PID is QEMU's.
		args = append([]string{"netns", "exec", o.netns, qemuBin(t)}, args...)
		v.cmd = exec.CommandContext(ctx, "ip", args...)
	} else {
		v.cmd = exec.CommandContext(ctx, qemuBin(t), args...)
	}
	pr, pw := io.Pipe()
	v.cmd.Stdout, v.cmd.Stderr = pw, pw
	v.start = time.Now()
	if err := v.cmd.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			v.mu.Lock()
			v.console.WriteString(line + "\n")
			for _, m := range markers {
				if _, ok := v.marks[m]; !ok && strings.Contains(line, m) {
					v.marks[m] = time.Since(v.start)
				}
			}
			v.mu.Unlock()
			if o.onLine != nil {
				o.onLine(v, line)
			}
		}
		io.Copy(io.Discard, pr)
	}()
	v.waitFn = func() error {
		err := v.cmd.Wait()
		pw.Close()
		<-done
		cancel()
		if v.stopTPM != nil {
			v.stopTPM()
		}
		return err
	}
	t.Cleanup(func() {
		if v.cmd.ProcessState == nil {
			v.cmd.Process.Kill()
			v.wait()
		}
	})
	return v
}

// wait waits for QEMU to exit (once).
func (v *vm) wait() error {
	v.waitOnce.Do(func() { v.waitErr = v.waitFn() })
	return v.waitErr
}

func (v *vm) output() string {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.console.String()
}

func (v *vm) mark(m string) time.Duration {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.marks[m]
}

// monitor sends one HMP command and returns its answer.
func (v *vm) monitor(cmd string) (string, error) {
	c, err := net.DialTimeout("unix", v.monPath, 10*time.Second)
	if err != nil {
		return "", fmt.Errorf("connecting to the QEMU monitor: %w", err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Minute))
	r := bufio.NewReader(c)
	readPrompt := func() (string, error) {
		var b strings.Builder
		for !strings.HasSuffix(b.String(), "(qemu) ") {
			ch, err := r.ReadByte()
			if err != nil {
				return b.String(), err
			}
			b.WriteByte(ch)
		}
		return b.String(), nil
	}
	if _, err := readPrompt(); err != nil {
		return "", fmt.Errorf("reading the monitor's greeting: %w", err)
	}
	if _, err := fmt.Fprintf(c, "%s\n", cmd); err != nil {
		return "", err
	}
	out, err := readPrompt()
	if err != nil {
		return out, fmt.Errorf("monitor %q: %w", cmd, err)
	}
	return strings.TrimSuffix(out, "(qemu) "), nil
}

// screenshot dumps the display to a PPM, converts it to PNG and returns
// the image and the PNG's path.
func (v *vm) screenshot(name string) (image.Image, string, error) {
	ppm := filepath.Join(v.dir, name+".ppm")
	if out, err := v.monitor("screendump " + ppm); err != nil {
		return nil, "", fmt.Errorf("screendump: %w (%s)", err, out)
	}
	var img image.Image
	var err error
	for range 50 { // the dump may land just after the prompt
		var b []byte
		if b, err = os.ReadFile(ppm); err == nil {
			if img, err = decodePPM(b); err == nil {
				break
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		return nil, "", err
	}
	out := filepath.Join(artifactsDir(v.t), v.t.Name()+"-"+name+".png")
	os.MkdirAll(filepath.Dir(out), 0o755)
	f, err := os.Create(out)
	if err != nil {
		return nil, "", err
	}
	defer f.Close()
	if err := png.Encode(f, img); err != nil {
		return nil, "", err
	}
	return img, out, f.Close()
}

// artifactsDir is PROVSTICK_ARTIFACTS if set (kept after the test), else a
// temporary directory.
func artifactsDir(t *testing.T) string {
	if d := os.Getenv("PROVSTICK_ARTIFACTS"); d != "" {
		return d
	}
	return t.TempDir()
}

// decodePPM reads a binary (P6, maxval 255) portable pixmap, what QEMU's
// screendump writes.
func decodePPM(b []byte) (image.Image, error) {
	var fields []string
	rest := b
	for len(fields) < 4 {
		rest = bytes.TrimLeft(rest, " \t\r\n")
		if len(rest) > 0 && rest[0] == '#' {
			if i := bytes.IndexByte(rest, '\n'); i >= 0 {
				rest = rest[i+1:]
				continue
			}
			return nil, errors.New("ppm: header ends in a comment")
		}
		i := bytes.IndexAny(rest, " \t\r\n")
		if i <= 0 {
			return nil, errors.New("ppm: short header")
		}
		fields = append(fields, string(rest[:i]))
		rest = rest[i:]
	}
	rest = rest[1:] // one whitespace byte after maxval
	w, err1 := strconv.Atoi(fields[1])
	h, err2 := strconv.Atoi(fields[2])
	if fields[0] != "P6" || fields[3] != "255" || err1 != nil || err2 != nil || w <= 0 || h <= 0 || w > 8192 || h > 8192 {
		return nil, fmt.Errorf("ppm: header %q: want P6, maxval 255, a sane size", fields)
	}
	if len(rest) < w*h*3 {
		return nil, fmt.Errorf("ppm: %d bytes of pixels, want %d", len(rest), w*h*3)
	}
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := range h {
		for x := range w {
			p := rest[(y*w+x)*3:]
			img.SetRGBA(x, y, color.RGBA{p[0], p[1], p[2], 255})
		}
	}
	return img, nil
}

// ocr reads the screen with tesseract: light text on dark becomes black
// on white, scaled so that a VGA-sized glyph is ~40 px high.
func ocr(t *testing.T, img image.Image) string {
	t.Helper()
	bin, err := exec.LookPath("tesseract")
	if err != nil {
		t.Fatalf("tesseract not installed (apt-get install tesseract-ocr): %v", err)
	}
	bnd := img.Bounds()
	scale := 3
	if bnd.Dx() >= 1000 {
		scale = 2
	}
	// Text becomes black on white: in the coloured bars (rows mostly
	// saturated) text is whatever is not the bar's colour; elsewhere it
	// is what is light on the black background.
	saturated := func(x, y int) bool {
		r, g, b, _ := img.At(bnd.Min.X+x, bnd.Min.Y+y).RGBA()
		hi, lo := max(r, g, b)>>8, min(r, g, b)>>8
		return hi-lo > 80
	}
	bar := make([]bool, bnd.Dy())
	for y := range bnd.Dy() {
		n := 0
		for x := range bnd.Dx() {
			if saturated(x, y) {
				n++
			}
		}
		bar[y] = n > bnd.Dx()/2
	}
	g := image.NewGray(image.Rect(0, 0, bnd.Dx()*scale, bnd.Dy()*scale))
	for y := range g.Rect.Dy() {
		for x := range g.Rect.Dx() {
			sx, sy := x/scale, y/scale
			var text bool
			if bar[sy] {
				text = !saturated(sx, sy)
			} else {
				r, gg, b, _ := img.At(bnd.Min.X+sx, bnd.Min.Y+sy).RGBA()
				text = (299*r+587*gg+114*b)/1000>>8 > 128
			}
			v := uint8(255)
			if text {
				v = 0
			}
			g.SetGray(x, y, color.Gray{v})
		}
	}
	p := filepath.Join(t.TempDir(), "ocr.png")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	png.Encode(f, g)
	f.Close()
	out, err := exec.Command(bin, p, "stdout", "--psm", "6").Output()
	if err != nil {
		t.Fatalf("tesseract: %v", err)
	}
	return string(out)
}

var spaces = regexp.MustCompile(`\s+`)

// ocrHas reports whether the OCR text holds want, ignoring case and runs
// of white space.
func ocrHas(text, want string) bool {
	n := func(s string) string { return strings.ToLower(spaces.ReplaceAllString(s, " ")) }
	return strings.Contains(n(text), n(want))
}

// startSwtpmUnix starts swtpm for QEMU on state dir and returns its
// control socket and a function that stops it (it also ends when QEMU
// goes, --terminate, or at cleanup).
func startSwtpmUnix(t *testing.T, state string) (string, func()) {
	t.Helper()
	bin, err := exec.LookPath("swtpm")
	if err != nil {
		t.Fatalf("swtpm not installed (apt-get install swtpm): %v", err)
	}
	ctrl := filepath.Join(state, "ctrl.sock")
	os.Remove(ctrl)
	cmd := exec.Command(bin, "socket", "--tpm2", "--terminate",
		"--tpmstate", "dir="+state,
		"--ctrl", "type=unixio,path="+ctrl,
		"--log", "file="+filepath.Join(state, "swtpm.log"))
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	var once sync.Once
	stop := func() { once.Do(func() { cmd.Process.Kill(); <-exited }) }
	t.Cleanup(stop)
	for range 400 {
		if _, err := os.Stat(ctrl); err == nil {
			return ctrl, stop
		}
		time.Sleep(25 * time.Millisecond)
	}
	t.Fatal("swtpm did not create its control socket")
	return "", stop
}
