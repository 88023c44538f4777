package amtsim

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"io"
	"net/http"
	"strconv"
	"sync"

	"github.com/provstick/provstick/initramfs/heci/amthi"
	"github.com/provstick/provstick/internal/wsman"
)

// Host-based activation (specs/pki.md §6): the host's agent authenticates
// to the local WS-Man interface as the local system account (AMTHI
// GetLocalSystemAccount) and calls IPS_HostBasedSetupService.Setup, which
// ends in client control mode.
//
// Real firmware serves local WS-Man through LMS over the LME client with
// APF port forwarding (specs/heci.md §3, later work). The simulator's LME
// client is a simplification, not APF: one MEI message carries one whole
// HTTP/1.1 request, the reply message one whole HTTP response.

// LMEMaxMessageLen is the simulated LME client's message size (the
// simulator's choice; a Setup request with Digest headers is about 2 KiB).
const LMEMaxMessageLen = 16 << 10

// localWSMan is the local interface of one ME server, made on first use.
type localWSMan struct {
	once sync.Once
	ws   *wsman.Server
}

// NewLocalWSMan returns the local WS-Man interface of dev as an HTTP
// handler: Digest as the local system account only; AMT_GeneralSettings,
// IPS_HostBasedSetupService Get and Setup. The ME side serves it on the
// LME client; tests may also serve it over HTTP.
func NewLocalWSMan(dev *Device) http.Handler { return newLocalWSMan(dev) }

func newLocalWSMan(dev *Device) *wsman.Server {
	var realm string
	dev.Update(func(st *State) {
		if st.Net.Realm == "" {
			st.Net.Realm = DefaultRealm(amthi.UUID(st.UUID))
		}
		realm = st.Net.Realm
	})
	ws := wsman.NewServer(wsman.ServerOptions{
		Realm: realm,
		Credentials: func(_ context.Context, user, r string) (wsman.HA1, bool) {
			st := dev.shallow()
			if r != st.Net.Realm || st.LocalUser == "" || st.LocalPass.IsZero() || user != st.LocalUser {
				return wsman.HA1{}, false
			}
			return wsman.DigestHA1(user, r, wsman.Secret(st.LocalPass.Reveal())), true
		},
		MaxNonces: 4,
	})
	ws.HandleGet(wsman.URIGeneralSettings, func(context.Context, *wsman.Request) (any, error) {
		st := dev.shallow()
		return wsman.GeneralSettings{ElementName: "Intel(r) AMT: General Settings", InstanceID: "Intel(r) AMT: General Settings",
			NetworkInterfaceEnabled: true, DigestRealm: st.Net.Realm, HostName: st.Net.HostName, DomainName: st.DNSSuffix, AMTNetworkEnabled: 1}, nil
	})
	ws.HandleGet(URIHostBasedSetupService, func(context.Context, *wsman.Request) (any, error) {
		nonce := make([]byte, 20)
		_, _ = rand.Read(nonce)
		return hbsInstance(dev.shallow(), nonce, 0), nil
	})
	ws.HandleMethod(URIHostBasedSetupService, "Setup", func(_ context.Context, r *wsman.Request) (any, wsman.Status, error) {
		var in setupInput
		if err := r.Decode(&in); err != nil {
			return nil, 0, err
		}
		ha1, ok := decodeNetworkAdminPassword(in.NetAdminPassEncryptionType, in.NetworkAdminPassword)
		if !ok {
			return nil, HBSInvalidParam, nil
		}
		rv := HBSSuccess
		dev.Update(func(st *State) {
			if st.ProvisioningState == amthi.StatePost {
				rv = HBSInvalidState
				return
			}
			st.Net.AdminUser, st.Net.AdminHA1, st.Net.AdminSet = "admin", ha1, true
			st.Net.pend = pending{}
			st.Net.Commits++
			st.ProvisioningState = amthi.StatePost
			st.ControlMode = amthi.ControlClient
			if st.ProvisioningMode == amthi.ModeNone {
				st.ProvisioningMode = amthi.ModeEnterprise
			}
		})
		return nil, rv, nil
	})
	return ws
}

// lme answers one message on the LME client: an HTTP request in, the
// HTTP response out.
func (s *MEServer) lme(req []byte) []byte {
	s.local.once.Do(func() { s.local.ws = newLocalWSMan(s.dev) })
	hr, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(req)))
	if err != nil {
		s.log.Debug("amtsim: LME: not an HTTP request", "bytes", len(req))
		return []byte("HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
	}
	hr.RemoteAddr = "127.0.0.1:16992" // the host, as LMS would present it
	w := &lmeWriter{h: http.Header{}}
	s.local.ws.ServeHTTP(w, hr)
	if w.code == 0 {
		w.code = http.StatusOK
	}
	resp := &http.Response{StatusCode: w.code, ProtoMajor: 1, ProtoMinor: 1, Header: w.h,
		Body: io.NopCloser(bytes.NewReader(w.body.Bytes())), ContentLength: int64(w.body.Len())}
	resp.Header.Set("Content-Length", strconv.Itoa(w.body.Len()))
	var out bytes.Buffer
	if err := resp.Write(&out); err != nil {
		return []byte("HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n")
	}
	if out.Len() > LMEMaxMessageLen {
		return []byte("HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n")
	}
	return out.Bytes()
}

// lmeWriter collects one response.
type lmeWriter struct {
	h    http.Header
	code int
	body bytes.Buffer
}

func (w *lmeWriter) Header() http.Header { return w.h }
func (w *lmeWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
}
func (w *lmeWriter) Write(b []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	return w.body.Write(b)
}
