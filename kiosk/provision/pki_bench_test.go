package provision

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/provstick/provstick/internal/amtsim"
	"github.com/provstick/provstick/internal/tlspsk"
	"github.com/provstick/provstick/internal/wsman"
)

// The PKI handshake against the PSK one, in the same run: each operation
// is one device's connection as the kiosk makes it — a new TCP connection,
// the TLS handshake (RSA provisioning chain checked by the simulated
// machine / TLS-PSK), and the first Digest-authenticated WS-Man Get
// (401 challenge, then the answer). devices/s is ops/s.
// scripts/bench-pki.sh runs both and prints the ratio.

func BenchmarkPKIHandshake(b *testing.B) {
	pkiFixtures(b)
	_, addr, _ := pkiMachine(b, pkiFix.site, "site.example", nil)
	cfg := PKIClientConfig(pkiFix.site)
	benchHandshakes(b, func() *http.Transport {
		return &http.Transport{TLSClientConfig: cfg.Clone(), DisableKeepAlives: true}
	}, "https://"+addr+"/wsman", string(pkiMEBx))
}

func BenchmarkPSKHandshake(b *testing.B) {
	const pid, pps = "ABCD0123", "0123456789ABCDEFGHJKLMNPQRSTUVWX"
	dev := amtsim.NewDevice(amtsim.DefaultState())
	if err := dev.ApplySetupRecord(amtsim.SetupRecord{PID: pid, PPS: amtsim.NewSecret(pps), MEBxPassword: amtsim.NewSecret(string(pkiMEBx))}); err != nil {
		b.Fatal(err)
	}
	ns := amtsim.NewNetServer(dev, &amtsim.NetOptions{GenerateKey: fastKey, Hello: amtsim.HelloOptions{Disabled: true}})
	_, tl, err := amtsim.ListenNet("127.0.0.1", 0, 0)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ns.Start(ctx, nil, tl)
	b.Cleanup(func() { cancel(); ns.Close() })
	var form tlspsk.KeyForm
	benchHandshakes(b, func() *http.Transport {
		d := &tlspsk.Dialer{NetDialer: &net.Dialer{Timeout: 10 * time.Second}, Config: &tlspsk.Config{
			Identity: func(string) (string, []byte, error) { return pid, form.Key(pid, pps), nil },
		}}
		return &http.Transport{DialTLSContext: d.DialContext, DisableKeepAlives: true}
	}, "https://"+tl.Addr().String()+"/wsman", string(pkiMEBx))
}

func benchHandshakes(b *testing.B, transport func() *http.Transport, endpoint, password string) {
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for b.Loop() {
		tr := transport()
		c, err := wsman.NewClient(wsman.Options{Endpoint: endpoint, Password: wsman.Secret(password), HTTPClient: &http.Client{Transport: tr},
			Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := c.GetGeneralSettings(context.Background()); err != nil {
			b.Fatal(err)
		}
		tr.CloseIdleConnections()
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "devices/s")
}

// BenchmarkPKIProvision is the whole PKI workflow per machine (a new
// simulated machine each time, keys pre-made): AdminSetup with the signed
// nonces, key, certificate, TLS, commit, verification.
func BenchmarkPKIProvision(b *testing.B) {
	pkiFixtures(b)
	b.ReportAllocs()
	var total time.Duration
	for b.Loop() {
		b.StopTimer()
		_, addr, j := pkiMachine(b, pkiFix.site, "site.example", nil)
		p := pkiProvisioner(b, pkiFix.site, addr, nil)
		p.o.VerifyDelay = -1
		b.StartTimer()
		t0 := time.Now()
		if res := p.Provision(context.Background(), j); res.Outcome != OutcomeProvisioned {
			b.Fatalf("%s: %v", res.Outcome, res.Failure)
		}
		total += time.Since(t0)
	}
	b.ReportMetric(float64(b.N)/total.Seconds(), "devices/s")
}
