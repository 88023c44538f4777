package wsman

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/http/httptest"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/provstick/provstick/internal/peertest"
)

type mcResult struct {
	Error   string `json:"error"`
	General struct {
		Status                  int    `json:"status"`
		Method                  string `json:"method"`
		ResourceURI             string `json:"resourceURI"`
		Realm                   string `json:"realm"`
		HostName                string `json:"hostName"`
		NetworkInterfaceEnabled bool   `json:"networkInterfaceEnabled"`
	} `json:"general"`
	Software struct {
		Status int `json:"status"`
		Items  []struct {
			InstanceID    string `json:"InstanceID"`
			VersionString string `json:"VersionString"`
			IsEntity      bool   `json:"IsEntity"`
		} `json:"items"`
	} `json:"software"`
	Mebx struct {
		Status         int    `json:"status"`
		Method         string `json:"method"`
		ReturnValue    int    `json:"returnValue"`
		ReturnValueStr string `json:"returnValueStr"`
	} `json:"mebx"`
	MebxShort struct {
		Status         int    `json:"status"`
		ReturnValue    int    `json:"returnValue"`
		ReturnValueStr string `json:"returnValueStr"`
	} `json:"mebxShort"`
	UnknownClass struct {
		Status     int    `json:"status"`
		WsmanError string `json:"wsmanError"`
	} `json:"unknownClass"`
	WrongPassword struct {
		Status int `json:"status"`
	} `json:"wrongPassword"`
}

// TestMeshCentralClient runs MeshCentral's WS-Management stack, an
// independent client, against our dispatcher over plain HTTP with Digest:
// Get AMT_GeneralSettings, Enumerate CIM_SoftwareIdentity (two items per
// Pull, so it must follow EnumerationContext), SetMEBxPassword.
func TestMeshCentralClient(t *testing.T) {
	node, amtDir := peertest.MeshCentralAMT(t, "amt-wsman-comm.js", "amt-wsman.js", "amt-xml.js", "amt.js")
	var logs syncBuffer
	f := newFakeAMT(t, debugLogger(&logs), testPassword)
	f.srv.opts.MaxPullElements = 2
	ts := httptest.NewServer(f.srv)
	defer ts.Close()
	host, port, err := net.SplitHostPort(ts.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	const mebx = "Mesh-Mebx-9!"
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, filepath.Join("testdata", "meshcentral", "client.js"),
		amtDir, host, port, "admin", string(testPassword), mebx)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("node: %v\nstderr:\n%s\nstdout:\n%s\nserver log:\n%s", err, stderr.String(), out, logs.String())
	}
	var r mcResult
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatalf("node output %q: %v", out, err)
	}
	fail := func(format string, args ...any) {
		t.Helper()
		t.Errorf(format, args...)
	}
	if r.Error != "" {
		fail("MeshCentral script: %s", r.Error)
	}
	if g := r.General; g.Status != 200 || g.Method != "AMT_GeneralSettings" || g.ResourceURI != URIGeneralSettings ||
		g.Realm != testRealm || g.HostName != "pc-1" || !g.NetworkInterfaceEnabled {
		fail("Get AMT_GeneralSettings as MeshCentral saw it: %+v", g)
	}
	if s := r.Software; s.Status != 200 || len(s.Items) != len(f.versions) {
		fail("Enumerate CIM_SoftwareIdentity: %+v", s)
	} else {
		for i, it := range s.Items {
			if it.InstanceID != f.versions[i].InstanceID || it.VersionString != f.versions[i].VersionString || !it.IsEntity {
				fail("item %d = %+v, want %+v", i, it, f.versions[i])
			}
		}
	}
	if m := r.Mebx; m.Status != 200 || m.Method != "SetMEBxPassword" || m.ReturnValue != 0 || m.ReturnValueStr != "SUCCESS" {
		fail("SetMEBxPassword: %+v", m)
	}
	if f.mebx != mebx {
		fail("device MEBx password not set by MeshCentral")
	}
	if m := r.MebxShort; m.Status != 200 || m.ReturnValue != int(StatusInvalidPassword) || m.ReturnValueStr != "INVALID_PASSWORD" {
		fail("short SetMEBxPassword: %+v", m)
	}
	// MeshCentral's node transport hands non-200 replies on without their
	// body, so only the status is visible to it.
	if u := r.UnknownClass; u.Status != 400 {
		fail("unknown class: %+v", u)
	}
	if w := r.WrongPassword; w.Status != 401 {
		fail("wrong password: %+v", w)
	}
	if t.Failed() {
		t.Logf("node output: %s\nserver log:\n%s", out, logs.String())
	}
}
