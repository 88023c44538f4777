package amtsim

import (
	"bufio"
	"bytes"
	"net/http"
	"testing"
)

// FuzzLME feeds arbitrary messages to the simulated LME client: every
// reply must be one well-formed HTTP response no longer than the LME
// message size, and the machine must stay unprovisioned (nothing reaches
// Setup without the local account's Digest).
func FuzzLME(f *testing.F) {
	f.Add([]byte("POST /wsman HTTP/1.1\r\nHost: 127.0.0.1:16992\r\nContent-Type: application/soap+xml\r\nContent-Length: 0\r\n\r\n"))
	f.Add([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
	f.Add([]byte("garbage"))
	f.Add([]byte("POST /wsman HTTP/1.1\r\nHost: x\r\nAuthorization: Digest username=\"$$OsAdmin\", realm=\"r\", nonce=\"n\", uri=\"/wsman\", response=\"00\"\r\nContent-Length: 5\r\n\r\nhello"))
	dev := NewDevice(DefaultState())
	s := NewMEServer(dev, &MEOptions{LME: true})
	f.Fuzz(func(t *testing.T, b []byte) {
		out := s.lme(b)
		if len(out) > LMEMaxMessageLen {
			t.Fatalf("reply of %d bytes", len(out))
		}
		resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(out)), nil)
		if err != nil {
			t.Fatalf("reply is not an HTTP response: %v", err)
		}
		resp.Body.Close()
		if st := dev.State(); st.ProvisioningState != DefaultState().ProvisioningState {
			t.Fatal("an unauthenticated message changed the provisioning state")
		}
	})
}
