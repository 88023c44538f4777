package amtsim

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/provstick/provstick/internal/peertest"
)

// meshCentral returns node, MeshCentral's amt/ folder and the driver
// script. The script is internal/wsman's (testdata/meshcentral/client.js),
// used from there rather than copied: one driver for the dispatcher test
// and this one.
func meshCentral(t testing.TB) (node, amtDir, script string) {
	t.Helper()
	node, amtDir = peertest.MeshCentralAMT(t, "amt-wsman-comm.js", "amt-wsman.js", "amt-xml.js", "amt.js")
	script = filepath.Join("..", "wsman", "testdata", "meshcentral", "client.js")
	if _, err := os.Stat(script); err != nil {
		t.Fatal(err)
	}
	return node, amtDir, script
}

// TestMeshCentralClient runs MeshCentral's WS-Management stack (an
// independent client) against the simulator's 16992 Digest path: Get
// AMT_GeneralSettings, Enumerate CIM_SoftwareIdentity, SetMEBxPassword
// (a good one, then one the MEBx rules refuse with 2054), an unknown
// class and a wrong password.
func TestMeshCentralClient(t *testing.T) {
	node, amtDir, script := meshCentral(t)
	n := startNet(t, inSetup(t), nil)
	host, port, err := net.SplitHostPort(n.httpAddr)
	if err != nil {
		t.Fatal(err)
	}
	const mebx = "Mesh-Mebx-9!"
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, script, amtDir, host, port, "admin", testMEBx, mebx)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("node: %v\nstderr:\n%s\nstdout:\n%s", err, stderr.String(), out)
	}
	var r struct {
		Error   string `json:"error"`
		General struct {
			Status int    `json:"status"`
			Method string `json:"method"`
			Realm  string `json:"realm"`
			Host   string `json:"hostName"`
		} `json:"general"`
		Software struct {
			Status int `json:"status"`
			Items  []struct {
				InstanceID    string `json:"InstanceID"`
				VersionString string `json:"VersionString"`
			} `json:"items"`
		} `json:"software"`
		Mebx struct {
			Status      int    `json:"status"`
			Method      string `json:"method"`
			ReturnValue int    `json:"returnValue"`
		} `json:"mebx"`
		MebxShort struct {
			Status      int    `json:"status"`
			ReturnValue int    `json:"returnValue"`
			Str         string `json:"returnValueStr"`
		} `json:"mebxShort"`
		UnknownClass struct {
			Status int `json:"status"`
		} `json:"unknownClass"`
		WrongPassword struct {
			Status int `json:"status"`
		} `json:"wrongPassword"`
	}
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatalf("node output %q: %v", out, err)
	}
	st := n.srv.Device().State()
	if r.Error != "" {
		t.Errorf("MeshCentral script: %s", r.Error)
	}
	if g := r.General; g.Status != 200 || g.Method != "AMT_GeneralSettings" || g.Realm != st.Net.Realm || g.Host != st.Net.HostName {
		t.Errorf("Get AMT_GeneralSettings as MeshCentral saw it: %+v", g)
	}
	amt := ""
	for _, it := range r.Software.Items {
		if it.InstanceID == "AMT" {
			amt = it.VersionString
		}
	}
	if r.Software.Status != 200 || len(r.Software.Items) != 10 || amt != "9.5.30" {
		t.Errorf("Enumerate CIM_SoftwareIdentity: %+v", r.Software)
	}
	if m := r.Mebx; m.Status != 200 || m.Method != "SetMEBxPassword" || m.ReturnValue != 0 {
		t.Errorf("SetMEBxPassword: %+v", m)
	}
	if !st.Net.pend.mebx.Equal(mebx) {
		t.Errorf("MEBx password not staged on the device")
	}
	if m := r.MebxShort; m.Status != 200 || m.ReturnValue != 2054 || m.Str != "INVALID_PASSWORD" {
		t.Errorf("short SetMEBxPassword: %+v", m)
	}
	if r.UnknownClass.Status != 400 || r.WrongPassword.Status != 401 {
		t.Errorf("unknown class %d, wrong password %d; want 400, 401", r.UnknownClass.Status, r.WrongPassword.Status)
	}
}

type nodeBench struct{ N, NS, OK int64 }

// runNode runs one of wsman's MeshCentral bench drivers and decodes its
// JSON line.
func runNode(tb testing.TB, node string, args ...string) (*nodeBench, error) {
	tb.Helper()
	out, err := exec.CommandContext(tb.Context(), node, args...).Output()
	if err != nil {
		return nil, fmt.Errorf("node: %w", err)
	}
	var r nodeBench
	if err := json.Unmarshal(out, &r); err != nil {
		return nil, fmt.Errorf("node output %q: %w", out, err)
	}
	return &r, nil
}
