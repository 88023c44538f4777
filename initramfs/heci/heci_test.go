package heci

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/")

func TestGUID(t *testing.T) {
	// The ioctl bytes are copied from the table in specs/heci.md §2.
	tests := []struct {
		name, text, ioctl string
		g                 GUID
	}{
		{"AMTHI", "12F80028-B4B7-4B2D-ACA8-46E0FF65814C", "28 00 f8 12 b7 b4 2d 4b ac a8 46 e0 ff 65 81 4c", AMTHIClient},
		{"MKHI", "8E6A6715-9ABC-4043-88EF-9E39C6F63E0F", "15 67 6a 8e bc 9a 43 40 88 ef 9e 39 c6 f6 3e 0f", MKHIClient},
		{"LME", "6733A4DB-0476-4E7B-B3AF-BCFC29BEE7A7", "db a4 33 67 76 04 7b 4e b3 af bc fc 29 be e7 a7", LMEClient},
		{"watchdog", "05B79A6F-4628-4D7F-899D-A91514CB32AB", "6f 9a b7 05 28 46 7f 4d 89 9d a9 15 14 cb 32 ab", WatchdogClient},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g, err := ParseGUID(tt.text)
			if err != nil {
				t.Fatal(err)
			}
			want := hexBytes(t, tt.ioctl)
			if !bytes.Equal(g[:], want) {
				t.Errorf("ParseGUID(%s) = %x, want %x", tt.text, g[:], want)
			}
			if g != tt.g {
				t.Errorf("constant = %x, want %x", tt.g[:], g[:])
			}
			if g.String() != tt.text {
				t.Errorf("String() = %s, want %s", g, tt.text)
			}
			if tt.g.Name() != tt.name {
				t.Errorf("Name() = %s, want %s", tt.g.Name(), tt.name)
			}
		})
	}
	for _, bad := range []string{"", "12F80028B4B74B2DACA846E0FF65814C", "12F80028-B4B7-4B2D-ACA8-46E0FF65814", "ZZF80028-B4B7-4B2D-ACA8-46E0FF65814C"} {
		if _, err := ParseGUID(bad); err == nil {
			t.Errorf("ParseGUID(%q) succeeded", bad)
		}
	}
}

func hexBytes(t testing.TB, s string) []byte {
	t.Helper()
	var b []byte
	for _, f := range strings.Fields(s) {
		var v byte
		for _, c := range []byte(f) {
			v <<= 4
			switch {
			case c >= '0' && c <= '9':
				v |= c - '0'
			case c >= 'a' && c <= 'f':
				v |= c - 'a' + 10
			default:
				t.Fatalf("bad hex %q", f)
			}
		}
		b = append(b, v)
	}
	return b
}

func TestParseAddress(t *testing.T) {
	tests := []struct {
		in      string
		want    Address
		str     string
		wantErr string
	}{
		{in: "mei:///dev/mei0", want: Address{Kind: KindMEI, Path: "/dev/mei0"}, str: "mei:///dev/mei0"},
		{in: "mei:/dev/mei", want: Address{Kind: KindMEI, Path: "/dev/mei"}, str: "mei:///dev/mei"},
		{in: "unix:///run/me.sock", want: Address{Kind: KindUnix, Path: "/run/me.sock"}, str: "unix:///run/me.sock"},
		{in: "unix:me.sock", want: Address{Kind: KindUnix, Path: "me.sock"}, str: "unix:me.sock"},
		{in: "virtio:org.provstick.mei", want: Address{Kind: KindVirtio, Port: "org.provstick.mei"}, str: "virtio:org.provstick.mei"},
		{in: "virtio:/dev/vport1p1", want: Address{Kind: KindVirtio, Path: "/dev/vport1p1"}, str: "virtio:/dev/vport1p1"},
		{in: "/dev/mei0", wantErr: "missing scheme"},
		{in: "mei://host/dev/mei0", wantErr: "unexpected host"},
		{in: "mei:dev/mei0", wantErr: "absolute path"},
		{in: "unix://", wantErr: "missing socket path"},
		{in: "virtio:", wantErr: "missing port name"},
		{in: "tcp://localhost:1", wantErr: "unknown scheme tcp"},
		{in: "unix:///tmp/a#1/me?.sock", want: Address{Kind: KindUnix, Path: "/tmp/a#1/me?.sock"}, str: "unix:///tmp/a#1/me?.sock"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseAddress(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), tt.in) {
					t.Fatalf("ParseAddress(%q) = %v, %v; want error containing %q and the address", tt.in, got, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("ParseAddress(%q) = %+v, want %+v", tt.in, got, tt.want)
			}
			if got.String() != tt.str {
				t.Errorf("String() = %q, want %q", got.String(), tt.str)
			}
		})
	}
}

func TestAddressFromCmdline(t *testing.T) {
	tests := []struct {
		name, cmdline, want string
		ok                  bool
	}{
		{"absent", "BOOT_IMAGE=/vmlinuz root=/dev/sda1 quiet\n", "", false},
		{"plain", "console=ttyS0 provstick.mei=virtio:org.provstick.mei quiet\n", "virtio:org.provstick.mei", true},
		{"last wins", "provstick.mei=mei:///dev/mei0 provstick.mei=unix:///run/me.sock", "unix:///run/me.sock", true},
		{"quoted", `a="b c" provstick.mei="unix:///run/my me.sock"`, "unix:///run/my me.sock", true},
		{"prefix only", "provstick.meix=1 xprovstick.mei=2", "", false},
		{"empty value", "provstick.mei=", "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := AddressFromCmdline(tt.cmdline)
			if got != tt.want || ok != tt.ok {
				t.Errorf("AddressFromCmdline(%q) = %q, %v; want %q, %v", tt.cmdline, got, ok, tt.want, tt.ok)
			}
		})
	}
}

func TestFindVirtioPort(t *testing.T) {
	sys := t.TempDir()
	for dir, name := range map[string]string{"vport0p0": "", "vport1p1": "org.qemu.guest_agent.0\n", "vport1p2": "org.provstick.mei\n"} {
		d := filepath.Join(sys, "class", "virtio-ports", dir)
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if name != "" {
			if err := os.WriteFile(filepath.Join(d, "name"), []byte(name), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	got, err := FindVirtioPort(sys, "/dev", "org.provstick.mei")
	if err != nil {
		t.Fatal(err)
	}
	if got != "/dev/vport1p2" {
		t.Errorf("got %s, want /dev/vport1p2", got)
	}
	_, err = FindVirtioPort(sys, "/dev", "org.example.none")
	if !errors.Is(err, ErrNoPort) || !strings.Contains(err.Error(), "org.qemu.guest_agent.0") {
		t.Errorf("missing port: got %v, want ErrNoPort listing the ports seen", err)
	}
	_, err = FindVirtioPort(filepath.Join(sys, "nothing"), "/dev", "org.provstick.mei")
	if !errors.Is(err, ErrNoPort) {
		t.Errorf("no sysfs dir: got %v, want ErrNoPort", err)
	}
}

func TestErrno(t *testing.T) {
	for _, tt := range []struct {
		e    Errno
		want error
	}{{ENOTTY, ErrNoClient}, {EBUSY, ErrBusy}, {ENODEV, ErrNotReady}} {
		err := error(&ConnectError{Client: AMTHIClient, Err: tt.e})
		if !errors.Is(err, tt.want) {
			t.Errorf("%v does not match %v", err, tt.want)
		}
	}
	if errors.Is(Errno(5), ErrBusy) || Errno(5).Error() != "errno 5" {
		t.Errorf("unknown errno: %v", Errno(5))
	}
	r := error(&ResetError{Client: MKHIClient, Op: "receive"})
	if !errors.Is(r, ErrReset) || !strings.Contains(r.Error(), "MKHI") {
		t.Errorf("ResetError: %v", r)
	}
}

// fakeME is a scripted ME at the other end of a stream, for the transport
// tests (the full simulator is internal/amtsim).
type fakeME struct {
	t    *testing.T
	conn net.Conn
}

// streamModes runs a stream test once per way a Stream reads: with a
// reader goroutine (net.Pipe: no file descriptor) and leader/follower (a
// Unix socket; Linux only, elsewhere it has a reader goroutine too).
func streamModes(t *testing.T, test func(t *testing.T, mode string)) {
	for _, mode := range []string{"pipe", "unix"} {
		t.Run(mode, func(t *testing.T) { test(t, mode) })
	}
}

// unixPair returns the two ends of a Unix stream socket.
func unixPair(t *testing.T) (net.Conn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("unix", filepath.Join(t.TempDir(), "s"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	a, err := net.Dial("unix", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	b, err := ln.Accept()
	if err != nil {
		a.Close()
		t.Fatal(err)
	}
	return a, b
}

func newFakeStream(t *testing.T, mode string) (*Stream, *fakeME) {
	var a, b net.Conn
	switch mode {
	case "pipe":
		a, b = net.Pipe()
	case "unix":
		a, b = unixPair(t)
	default:
		t.Fatalf("unknown stream mode %q", mode)
	}
	s := NewStream(a, &Options{RetryMin: time.Millisecond, RetryMax: 5 * time.Millisecond})
	t.Cleanup(func() { s.Close(); b.Close() })
	if got, want := s.tok != nil, mode == "unix" && runtime.GOOS == "linux"; got != want {
		t.Fatalf("%s stream: leader/follower reading = %v, want %v", mode, got, want)
	}
	return s, &fakeME{t: t, conn: b}
}

func (m *fakeME) read() Frame {
	m.t.Helper()
	f, err := ReadFrame(m.conn)
	if err != nil {
		m.t.Errorf("fake ME: %v", err)
	}
	return f
}

func (m *fakeME) write(f Frame) {
	if _, err := m.conn.Write(AppendFrame(nil, f)); err != nil {
		m.t.Errorf("fake ME: %v", err)
	}
}

func (m *fakeME) connected(ch uint8) {
	p, _ := ConnectedPayload{MaxMessageLen: 4096, ProtocolVersion: 1}.AppendBinary(nil)
	m.write(Frame{Type: FrameConnected, Channel: ch, Payload: p})
}

func TestStreamConnectAndSend(t *testing.T) {
	streamModes(t, func(t *testing.T, mode string) {
		s, me := newFakeStream(t, mode)
		ctx := t.Context()
		meDone := make(chan struct{})
		go func() {
			defer close(meDone)
			f := me.read()
			if f.Type != FrameConnect || !bytes.Equal(f.Payload, AMTHIClient[:]) {
				t.Errorf("got %v %x, want connect to AMTHI", f.Type, f.Payload)
			}
			// Not ready twice, then connected.
			me.write(Frame{Type: FrameError, Channel: f.Channel, Payload: []byte{19, 0, 0, 0}})
			f = me.read()
			me.write(Frame{Type: FrameError, Channel: f.Channel, Payload: []byte{16, 0, 0, 0}})
			f = me.read()
			me.connected(f.Channel)
			m := me.read()
			if m.Type != FrameMessage || string(m.Payload) != "ping" {
				t.Errorf("got %v %q, want message ping", m.Type, m.Payload)
			}
			me.write(Frame{Type: FrameMessage, Channel: m.Channel, Payload: []byte("pong")})
			// A reset mid-request.
			m = me.read()
			me.write(Frame{Type: FrameReset, Channel: m.Channel})
			// The next Send reconnects.
			f = me.read()
			if f.Type != FrameConnect {
				t.Errorf("got %v, want connect after reset", f.Type)
			}
			me.connected(f.Channel)
			m = me.read()
			me.write(Frame{Type: FrameMessage, Channel: m.Channel, Payload: []byte("again")})
			// A reset while idle: reported by the next Send, nothing sent.
			me.write(Frame{Type: FrameReset, Channel: m.Channel})
			f = me.read()
			me.connected(f.Channel)
			m = me.read()
			me.write(Frame{Type: FrameMessage, Channel: m.Channel, Payload: []byte("third")})
			if f := me.read(); f.Type != FrameDisconnect {
				t.Errorf("got %v, want disconnect on Close", f.Type)
			}
		}()
		tr, err := s.Connect(ctx, AMTHIClient)
		if err != nil {
			t.Fatal(err)
		}
		if tr.MaxMessageLen() != 4096 {
			t.Errorf("MaxMessageLen = %d", tr.MaxMessageLen())
		}
		resp, err := tr.Send(ctx, []byte("ping"))
		if err != nil || string(resp) != "pong" {
			t.Fatalf("Send = %q, %v", resp, err)
		}
		_, err = tr.Send(ctx, []byte("x"))
		var re *ResetError
		if !errors.As(err, &re) || !errors.Is(err, ErrReset) || re.Op != "receive" {
			t.Fatalf("Send during reset = %v, want *ResetError (receive)", err)
		}
		if resp, err = tr.Send(ctx, []byte("y")); err != nil || string(resp) != "again" {
			t.Fatalf("Send after reset = %q, %v", resp, err)
		}
		// Wait until the idle reset is surely queued.
		time.Sleep(20 * time.Millisecond)
		if _, err = tr.Send(ctx, []byte("z")); !errors.As(err, &re) || re.Op != "idle" {
			t.Fatalf("Send after idle reset = %v, want *ResetError (idle)", err)
		}
		if resp, err = tr.Send(ctx, []byte("z")); err != nil || string(resp) != "third" {
			t.Fatalf("Send = %q, %v", resp, err)
		}
		if _, err := tr.Send(ctx, make([]byte, 4097)); !errors.Is(err, ErrTooLong) {
			t.Errorf("long message: got %v, want ErrTooLong", err)
		}
		if err := tr.Close(); err != nil {
			t.Fatal(err)
		}
		if _, err := tr.Send(ctx, []byte("a")); !errors.Is(err, ErrClosed) {
			t.Errorf("Send after Close = %v, want ErrClosed", err)
		}
		<-meDone // the fake ME has seen the disconnect
	})
}

func TestStreamConnectErrors(t *testing.T) {
	streamModes(t, func(t *testing.T, mode string) {
		s, me := newFakeStream(t, mode)
		go func() {
			f := me.read()
			me.write(Frame{Type: FrameError, Channel: f.Channel, Payload: []byte{25, 0, 0, 0}})
		}()
		_, err := s.Connect(t.Context(), AMTHIClient)
		if !errors.Is(err, ErrNoClient) {
			t.Fatalf("got %v, want ErrNoClient at once", err)
		}
		var ce *ConnectError
		if !errors.As(err, &ce) || ce.Client != AMTHIClient {
			t.Fatalf("got %v, want *ConnectError for AMTHI", err)
		}

		// Never ready: gives up when the context ends, saying why.
		go func() {
			for {
				f, err := ReadFrame(me.conn)
				if err != nil {
					return
				}
				if f.Type == FrameConnect {
					me.write(Frame{Type: FrameError, Channel: f.Channel, Payload: []byte{19, 0, 0, 0}})
				}
			}
		}()
		ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
		defer cancel()
		_, err = s.Connect(ctx, MKHIClient)
		if !errors.Is(err, ErrNotReady) || !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("got %v, want ErrNotReady and the deadline", err)
		}
	})
}

func TestStreamTimeoutAndEOF(t *testing.T) {
	streamModes(t, func(t *testing.T, mode string) {
		s, me := newFakeStream(t, mode)
		meDone := make(chan struct{})
		go func() {
			defer close(meDone)
			f := me.read()
			me.connected(f.Channel)
			me.read() // the request, never answered
			if f := me.read(); f.Type != FrameDisconnect {
				t.Errorf("got %v, want disconnect after the timeout", f.Type)
			}
			me.conn.Close()
		}()
		tr, err := s.Connect(t.Context(), AMTHIClient)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Millisecond)
		defer cancel()
		if _, err := tr.Send(ctx, []byte("q")); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("got %v, want deadline exceeded", err)
		}
		// With a reader goroutine the stream sees the end at once; with
		// leader/follower reading, at the next read or write.
		<-meDone
		if mode == "pipe" {
			<-s.done
		}
		if _, err := tr.Send(t.Context(), []byte("q")); !errors.Is(err, ErrClosed) {
			t.Fatalf("after EOF got %v, want ErrClosed", err)
		}
	})
}

func TestOpenUnix(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "me.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		me := &fakeME{t: t, conn: c}
		f := me.read()
		me.connected(f.Channel)
		m := me.read()
		me.write(Frame{Type: FrameMessage, Channel: m.Channel, Payload: append([]byte("re:"), m.Payload...)})
		me.read()
		c.Close()
	}()
	tr, err := Open(t.Context(), "unix://"+sock, AMTHIClient, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := tr.Send(t.Context(), []byte("hi"))
	if err != nil || string(resp) != "re:hi" {
		t.Fatalf("Send = %q, %v", resp, err)
	}
	if err := tr.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(t.Context(), "unix://"+sock+".none", AMTHIClient, nil); err == nil || !strings.Contains(err.Error(), ".none") {
		t.Errorf("missing socket: %v", err)
	}
}

func TestFrameGolden(t *testing.T) {
	connected, _ := ConnectedPayload{MaxMessageLen: 4096, ProtocolVersion: 1}.AppendBinary(nil)
	tests := []struct {
		file string
		f    Frame
		hex  string // written by hand from specs/heci.md §5
	}{
		{"connect-amthi.bin", Frame{Type: FrameConnect, Channel: 0, Payload: AMTHIClient[:]}, "12 00 00 00 01 00 28 00 f8 12 b7 b4 2d 4b ac a8 46 e0 ff 65 81 4c"},
		{"connected.bin", Frame{Type: FrameConnected, Channel: 0, Payload: connected}, "07 00 00 00 02 00 00 10 00 00 01"},
		{"error-enotty.bin", Frame{Type: FrameError, Channel: 1, Payload: []byte{25, 0, 0, 0}}, "06 00 00 00 03 01 19 00 00 00"},
		{"message.bin", Frame{Type: FrameMessage, Channel: 0, Payload: hexBytes(t, "01 01 00 00 5c 00 00 04 00 00 00 00")}, "0e 00 00 00 04 00 01 01 00 00 5c 00 00 04 00 00 00 00"},
		{"disconnect.bin", Frame{Type: FrameDisconnect, Channel: 2}, "02 00 00 00 05 02"},
		{"reset.bin", Frame{Type: FrameReset, Channel: 0}, "02 00 00 00 06 00"},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			got := AppendFrame(nil, tt.f)
			if want := hexBytes(t, tt.hex); !bytes.Equal(got, want) {
				t.Fatalf("got %x, want %x", got, want)
			}
			path := filepath.Join("testdata", "stream", tt.file)
			if *update {
				if err := os.WriteFile(path, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			golden, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, golden) {
				t.Errorf("got %x, want %x (%s)", got, golden, path)
			}
			back, err := ParseFrame(golden)
			if err != nil {
				t.Fatal(err)
			}
			if back.Type != tt.f.Type || back.Channel != tt.f.Channel || !bytes.Equal(back.Payload, tt.f.Payload) {
				t.Errorf("ParseFrame = %+v, want %+v", back, tt.f)
			}
		})
	}
	bad, err := os.ReadFile(filepath.Join("testdata", "stream", "bad-length.notframe"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ParseFrame(bad); !errors.Is(err, ErrFormat) {
		t.Errorf("bad-length.notframe: got %v, want ErrFormat", err)
	}
	if _, err := ReadFrame(bytes.NewReader(bad)); !errors.Is(err, ErrFormat) {
		t.Errorf("ReadFrame(bad-length.notframe): got %v, want ErrFormat", err)
	}
}

func TestDeviceHint(t *testing.T) {
	tests := []struct {
		err  error
		want string
	}{
		{fmt.Errorf("opening /dev/mei0: %w", fs.ErrNotExist), "mei_me driver is not loaded"},
		{fmt.Errorf("opening /dev/mei0: %w", fs.ErrPermission), "run as root"},
		{&ConnectError{Client: AMTHIClient, Err: ENOTTY}, "not present on this SKU"},
		{&ConnectError{Client: AMTHIClient, Err: EBUSY}, "lms"},
		{&ConnectError{Client: AMTHIClient, Err: ENODEV}, "not ready"},
		{errors.New("other"), ""},
	}
	for _, tt := range tests {
		got := DeviceHint(tt.err)
		if tt.want == "" && got != "" || !strings.Contains(got, tt.want) {
			t.Errorf("DeviceHint(%v) = %q, want it to contain %q", tt.err, got, tt.want)
		}
	}
}

// TestStreamManyChannels: several channels in flight on one stream, the
// replies of each round written at once and in reverse order, so each
// reader hands on frames for the others.
func TestStreamManyChannels(t *testing.T) {
	streamModes(t, func(t *testing.T, mode string) {
		s, me := newFakeStream(t, mode)
		const n, rounds = 6, 50
		go func() {
			var pending []Frame
			for {
				f, err := ReadFrame(me.conn)
				if err != nil {
					return
				}
				switch f.Type {
				case FrameConnect:
					me.connected(f.Channel)
				case FrameMessage:
					pending = append(pending, f)
					if len(pending) < n {
						continue
					}
					var b []byte
					for i := len(pending) - 1; i >= 0; i-- {
						p := pending[i]
						b = AppendFrame(b, Frame{Type: FrameMessage, Channel: p.Channel, Payload: append([]byte("re:"), p.Payload...)})
					}
					pending = pending[:0]
					if _, err := me.conn.Write(b); err != nil {
						return
					}
				}
			}
		}()
		ctx := t.Context()
		errs := make(chan error, n)
		for i := range n {
			go func() {
				errs <- func() error {
					tr, err := s.Connect(ctx, AMTHIClient)
					if err != nil {
						return err
					}
					for r := range rounds {
						req := fmt.Sprintf("%d/%d", i, r)
						resp, err := tr.Send(ctx, []byte(req))
						if err != nil {
							return err
						}
						if string(resp) != "re:"+req {
							return fmt.Errorf("got %q, want %q", resp, "re:"+req)
						}
					}
					return nil
				}()
			}()
		}
		for range n {
			if err := <-errs; err != nil {
				t.Fatal(err)
			}
		}
	})
}

// TestStreamCancelWhileOtherWaits: a Send whose context ends returns at
// once whoever is reading, and the other channel still gets its reply,
// then goes on working.
func TestStreamCancelWhileOtherWaits(t *testing.T) {
	streamModes(t, func(t *testing.T, mode string) {
		s, me := newFakeStream(t, mode)
		go func() {
			for {
				f, err := ReadFrame(me.conn)
				if err != nil {
					return
				}
				switch {
				case f.Type == FrameConnect:
					me.connected(f.Channel)
				case f.Type == FrameMessage && string(f.Payload) != "never":
					// Off the read loop: net.Pipe writes wait for the reader.
					time.AfterFunc(300*time.Millisecond, func() {
						me.conn.Write(AppendFrame(nil, Frame{Type: FrameMessage, Channel: f.Channel, Payload: f.Payload}))
					})
				}
			}
		}()
		ctx := t.Context()
		a, err := s.Connect(ctx, AMTHIClient)
		if err != nil {
			t.Fatal(err)
		}
		b, err := s.Connect(ctx, MKHIClient)
		if err != nil {
			t.Fatal(err)
		}
		got := make(chan error, 1)
		go func() {
			resp, err := b.Send(ctx, []byte("slow"))
			if err == nil && string(resp) != "slow" {
				err = fmt.Errorf("got %q, want slow", resp)
			}
			got <- err
		}()
		short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
		defer cancel()
		start := time.Now()
		if _, err := a.Send(short, []byte("never")); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("got %v, want deadline exceeded", err)
		}
		if d := time.Since(start); d > 200*time.Millisecond {
			t.Errorf("canceled Send returned after %v", d)
		}
		if err := <-got; err != nil {
			t.Fatal(err)
		}
		for _, req := range []string{"again", "and again"} {
			if resp, err := b.Send(ctx, []byte(req)); err != nil || string(resp) != req {
				t.Fatalf("Send after the cancel = %q, %v", resp, err)
			}
		}
	})
}
