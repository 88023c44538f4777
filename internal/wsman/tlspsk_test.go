package wsman

import (
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/provstick/provstick/internal/tlspsk"
)

// TestOverTLSPSK runs the kiosk's real path: our client over TLS-PSK (the
// tlspsk Dialer plugged into http.Transport.DialTLSContext) with Digest on
// top, to our dispatcher behind a tlspsk listener, as on port 16993.
func TestOverTLSPSK(t *testing.T) {
	const pid, pps = "ABCD-EFGH", "0123-4567-89AB-CDEF-0123-4567-89AB-CDEF"
	f := newFakeAMT(t, nil, testPassword)
	ln, err := tlspsk.Listen("tcp", "127.0.0.1:0", &tlspsk.Config{
		Hint: tlspsk.Identity(pid),
		GetKey: func(identity string) ([]byte, error) {
			if identity != tlspsk.Identity(pid) {
				return nil, tlspsk.ErrUnknownIdentity
			}
			return tlspsk.KeyPPSASCII.Key(pid, pps), nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: f.srv, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = hs.Serve(ln) }()
	t.Cleanup(func() { _ = hs.Close() })

	client := func(key string) *Client {
		d := &tlspsk.Dialer{Config: &tlspsk.Config{
			Identity: func(string) (string, []byte, error) {
				return tlspsk.Identity(pid), tlspsk.KeyPPSASCII.Key(pid, key), nil
			},
		}}
		tr := &http.Transport{DialTLSContext: d.DialContext}
		t.Cleanup(tr.CloseIdleConnections)
		return newTestClient(t, "https://"+ln.Addr().String(), testPassword, nil, func(o *Options) {
			o.Endpoint = "https://" + ln.Addr().String() + "/wsman"
			o.HTTPClient = &http.Client{Transport: tr, Timeout: 30 * time.Second}
		})
	}
	ctx := t.Context()
	c := client(pps)
	g, err := c.GetGeneralSettings(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if g.DigestRealm != testRealm {
		t.Errorf("realm %q", g.DigestRealm)
	}
	if err := c.SetMEBxPassword(ctx, "Over-Tls-1!"); err != nil || f.mebx != "Over-Tls-1!" {
		t.Errorf("SetMEBxPassword over TLS-PSK: %v", err)
	}
	// A wrong PPS fails in the handshake, before any HTTP.
	_, err = client("FFFF-4567-89AB-CDEF-0123-4567-89AB-CDEF").GetGeneralSettings(ctx)
	if !errors.Is(err, tlspsk.ErrBadKey) {
		t.Errorf("wrong PPS: err = %v, want tlspsk.ErrBadKey", err)
	}
}
