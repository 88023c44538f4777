package amtsim

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/hex"
	"fmt"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/provstick/provstick/internal/tlspsk"
)

// sClient sends req through `openssl s_client -psk` to addr (TLS 1.0,
// PSK-AES128-CBC-SHA, identity = the PID) and returns what came back
// before the server closed.
func sClient(t *testing.T, addr string, req string) string {
	t.Helper()
	path, err := exec.LookPath("openssl")
	if err != nil {
		t.Fatalf("openssl is needed for the interop test (scripts/install-deps.sh installs it): %v", err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	key := tlspsk.KeyPPSASCII.Key(testPID, testPPS)
	cmd := exec.CommandContext(ctx, path, "s_client", "-connect", addr, "-psk", hex.EncodeToString(key), "-psk_identity", testPID,
		"-cipher", "PSK-AES128-CBC-SHA:@SECLEVEL=0", "-tls1", "-quiet", "-ign_eof")
	cmd.Stdin = strings.NewReader(req)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("s_client: %v\nstderr:\n%s\nstdout:\n%s", err, stderr.String(), out)
	}
	return string(out)
}

const getGeneralSettings = `<?xml version="1.0" encoding="utf-8"?>
<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope" xmlns:a="http://schemas.xmlsoap.org/ws/2004/08/addressing" xmlns:w="http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd"><s:Header><a:Action s:mustUnderstand="true">http://schemas.xmlsoap.org/ws/2004/09/transfer/Get</a:Action><a:To>/wsman</a:To><w:ResourceURI s:mustUnderstand="true">http://intel.com/wbem/wscim/1/amt-schema/1/AMT_GeneralSettings</w:ResourceURI><a:MessageID>uuid:00000000-0000-0000-0000-000000000001</a:MessageID><a:ReplyTo><a:Address s:mustUnderstand="true">http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous</a:Address></a:ReplyTo><w:OperationTimeout>PT60S</w:OperationTimeout></s:Header><s:Body/></s:Envelope>`

// TestOpenSSLClient: OpenSSL's s_client, an independent TLS-PSK client,
// reaches the simulator's 16993 and carries HTTP both ways: a 401 with
// the Digest challenge, then (answering it) Get AMT_GeneralSettings.
func TestOpenSSLClient(t *testing.T) {
	n := startNet(t, inSetup(t), nil)
	post := func(auth string) string {
		h := "POST /wsman HTTP/1.1\r\nHost: " + n.tlsAddr + "\r\nContent-Type: application/soap+xml; charset=utf-8\r\nConnection: close\r\n"
		if auth != "" {
			h += "Authorization: " + auth + "\r\n"
		}
		return h + fmt.Sprintf("Content-Length: %d\r\n\r\n", len(getGeneralSettings)) + getGeneralSettings
	}
	out := sClient(t, n.tlsAddr, post(""))
	if !strings.HasPrefix(out, "HTTP/1.1 401") {
		t.Fatalf("first reply:\n%s", out)
	}
	field := func(name string) string {
		m := regexp.MustCompile(name + `="([^"]*)"`).FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("no %s in the challenge:\n%s", name, out)
		}
		return m[1]
	}
	realm, nonce := field("realm"), field("nonce")
	if realm != n.srv.Realm() || !strings.Contains(out, "Server: Intel(R) Active Management Technology 9.5.30") {
		t.Errorf("challenge:\n%s", out)
	}
	md5hex := func(s string) string { s2 := md5.Sum([]byte(s)); return hex.EncodeToString(s2[:]) }
	const cnonce, nc = "0a4f113b", "00000001"
	ha1 := md5hex("admin:" + realm + ":" + testMEBx)
	resp := md5hex(ha1 + ":" + nonce + ":" + nc + ":" + cnonce + ":auth:" + md5hex("POST:/wsman"))
	auth := fmt.Sprintf(`Digest username="admin", realm="%s", nonce="%s", uri="/wsman", qop=auth, nc=%s, cnonce="%s", response="%s"`,
		realm, nonce, nc, cnonce, resp)
	if m := regexp.MustCompile(`opaque="([^"]*)"`).FindStringSubmatch(out); m != nil {
		auth += `, opaque="` + m[1] + `"`
	}
	out = sClient(t, n.tlsAddr, post(auth))
	if !strings.HasPrefix(out, "HTTP/1.1 200") || !strings.Contains(out, "<g:DigestRealm>"+realm+"</g:DigestRealm>") {
		t.Errorf("Get AMT_GeneralSettings through s_client:\n%s", out)
	}
}
