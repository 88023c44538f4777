package provision

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/provstick/provstick/initramfs/heci/amthi"
	"github.com/provstick/provstick/internal/amtsim"
	wire "github.com/provstick/provstick/internal/hello"
	"github.com/provstick/provstick/setupbin"
)

// TestPKILoop is the PKI story without QEMU: a setup.bin with PKI records
// for the site root, the machine consumes record 0 (the simulator's BIOS),
// trusts only that hash, sends a version-3 hello to the kiosk's listener,
// and the kiosk provisions it to admin control mode from that hello.
func TestPKILoop(t *testing.T) {
	pkiFixtures(t)
	log := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelInfo}))
	h := pkiFix.site.RootHash()
	var file bytes.Buffer
	w, err := setupbin.NewWriter(&file, setupbin.WriterOptions{Profile: setupbin.ProfileAMT11Plus, Records: 2})
	if err != nil {
		t.Fatal(err)
	}
	for _, pw := range []setupbin.Password{pkiMEBx, "Other-Record-Pw2!"} {
		rec, err := (&setupbin.PKI{NewPassword: pw, RootHash: h[:], Suffix: "site.example"}).Record(setupbin.ProfileAMT11Plus)
		if err != nil {
			t.Fatal(err)
		}
		if err := w.AddRecord(rec); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	rd, err := setupbin.NewReader(bytes.NewReader(file.Bytes()), int64(file.Len()))
	if err != nil {
		t.Fatal(err)
	}
	rec0, err := rd.Records[0].PKI()
	if err != nil {
		t.Fatal(err)
	}

	// The kiosk's hello listener (a plain one: kiosk/hello is wired by kiosk.go).
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	hellos := make(chan *wire.Hello, 4)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_ = c.SetDeadline(time.Now().Add(5 * time.Second))
			b, _ := io.ReadAll(io.LimitReader(c, wire.MaxSize+1))
			c.Close()
			if m, err := wire.Parse(b); err == nil {
				hellos <- m
			}
		}
	}()

	dev := amtsim.NewDevice(amtsim.PKIState())
	if err := dev.ApplySetupRecord(amtsim.PKISetupRecord(rec0)); err != nil {
		t.Fatal(err)
	}
	ns := amtsim.NewNetServer(dev, &amtsim.NetOptions{Logger: log, GenerateKey: fastKey, CommitDowntime: 20 * time.Millisecond,
		Hello: amtsim.HelloOptions{SCS: ln.Addr().String(), TimeScale: 600, Timeout: 5 * time.Second}})
	_, tl, err := amtsim.ListenNet("127.0.0.1", 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	ns.Start(ctx, nil, tl)
	defer ns.Close()

	var m *wire.Hello
	select {
	case m = <-hellos:
	case <-time.After(10 * time.Second):
		t.Fatal("no hello")
	}
	if m.Version != wire.VersionPKI || len(m.RootHashes) != 1 || !bytes.Equal(m.RootHashes[0].Hash, h[:]) {
		t.Fatalf("hello %+v: want version 3 carrying only the site hash", m)
	}
	p := pkiProvisioner(t, pkiFix.site, tl.Addr().String(), log)
	res := p.Provision(t.Context(), PKIJob{UUID: m.UUID.String(), Retry: m.RetryCount, RootHashes: m.RootHashes, Peer: netip.MustParseAddrPort("127.0.0.1:1")})
	if res.Outcome != OutcomeProvisioned {
		t.Fatalf("%s: %v", res.Outcome, res.Failure)
	}
	if st := dev.State(); st.ControlMode != amthi.ControlAdmin || st.ProvisioningState != amthi.StatePost {
		t.Fatalf("machine %v %v", st.ProvisioningState, st.ControlMode)
	}
}
