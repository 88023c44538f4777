// Package hostbased is host-based activation of Intel AMT to client control
// mode from the agent on the target machine (../../specs/pki.md §6,
// ../../../shared/specs/heci.md §3): read the local system account over the
// AMT host interface (AMTHI GetLocalSystemAccount), reach the firmware's
// local WS-Management interface through the LME client, authenticate with
// HTTP Digest as that account, and call IPS_HostBasedSetupService.Setup
// with the new admin password in the Digest form (NetAdminPassEncryptionType
// 2, hex of MD5("admin:" realm ":" password)); then confirm with AMTHI
// GetControlMode.
//
// The LME channel: real firmware speaks APF (an SSH-like port-forwarding
// protocol, later work per heci.md §3) and LMS relays HTTP through it.
// This package sends one whole HTTP/1.1 request per MEI message and reads
// one whole response per reply message, which is what the simulator
// (internal/amtsim, MEOptions.LME) serves — UNCONFIRMED on hardware, and
// kept behind the Transport option so an APF transport can replace it.
package hostbased

import (
	"bufio"
	"bytes"
	"context"
	"crypto/md5"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"

	"github.com/provstick/provstick/initramfs/heci"
	"github.com/provstick/provstick/initramfs/heci/amthi"
	"github.com/provstick/provstick/internal/wsman"
)

// URIHostBasedSetupService is IPS_HostBasedSetupService.
const URIHostBasedSetupService = "http://intel.com/wbem/wscim/1/ips-schema/1/IPS_HostBasedSetupService"

// Endpoint is the local WS-Man address LMS serves; the request line and
// Host header carry it, the bytes go over the LME client.
const Endpoint = "http://127.0.0.1:16992/wsman"

// Errors callers branch on.
var (
	// ErrAlreadyProvisioned: the machine is post-provisioning; host-based
	// setup is for a machine in pre-provisioning (or in setup).
	ErrAlreadyProvisioned = errors.New("hostbased: machine already provisioned")
	// ErrNoLocalInterface: the firmware has no LME client (AMT disabled, or
	// a generation without host-based setup).
	ErrNoLocalInterface = errors.New("hostbased: no local manageability interface")
	// ErrRefused: Setup answered a non-zero ReturnValue.
	ErrRefused = errors.New("hostbased: Setup refused")
	// ErrNotClientMode: Setup answered success but the machine does not
	// report client control mode.
	ErrNotClientMode = errors.New("hostbased: not in client control mode after Setup")
)

// Password is the new admin password; String and LogValue hide it.
type Password string

func (Password) String() string       { return "REDACTED" }
func (Password) GoString() string     { return "hostbased.Password(REDACTED)" }
func (Password) LogValue() slog.Value { return slog.StringValue("REDACTED") }

// Options configure Activate.
type Options struct {
	// Logger: info lines per step; never secrets. nil → discard.
	Logger *slog.Logger
	// Transport carries local WS-Man; nil → the LME client of dev with
	// one HTTP message per MEI message (see the package comment).
	Transport http.RoundTripper
}

// Result is what Activate did, for the ledger.
type Result struct {
	Realm       string            // the Digest realm of the device
	LocalUser   string            // the local system account used (not secret)
	ControlMode amthi.ControlMode // 1 (client) on success
	State       amthi.ProvisioningState
}

// SetupError is Setup's refusal: the ReturnValue (specs/pki.md §5).
type SetupError struct{ ReturnValue uint32 }

func (e *SetupError) Error() string {
	names := map[uint32]string{1: "internal error", 2: "invalid state", 3: "invalid parameter", 4: "method disabled", 5: "authentication failed", 6: "flash write limit exceeded"}
	n, ok := names[e.ReturnValue]
	if !ok {
		n = "unknown"
	}
	return fmt.Sprintf("hostbased: IPS_HostBasedSetupService.Setup returned %d (%s)", e.ReturnValue, n)
}

func (e *SetupError) Unwrap() error { return ErrRefused }

type setupInput struct {
	NetAdminPassEncryptionType uint32       `xml:"NetAdminPassEncryptionType"`
	NetworkAdminPassword       wsman.Secret `xml:"NetworkAdminPassword"`
}

// Activate runs host-based activation on the machine behind dev and sets
// the admin password (user "admin") to password.
func Activate(ctx context.Context, dev heci.Device, password Password, opts *Options) (*Result, error) {
	var o Options
	if opts != nil {
		o = *opts
	}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if password == "" {
		return nil, errors.New("hostbased: empty admin password")
	}
	amt, err := dev.Connect(ctx, heci.AMTHIClient)
	if err != nil {
		return nil, fmt.Errorf("connecting to the AMT host interface: %w", err)
	}
	defer amt.Close()
	ps, err := amthi.GetProvisioningState{}.Execute(ctx, amt)
	if err != nil {
		return nil, fmt.Errorf("reading the provisioning state: %w", err)
	}
	if ps.State == amthi.StatePost {
		return nil, fmt.Errorf("host-based activation: %w", ErrAlreadyProvisioned)
	}
	acct, err := amthi.GetLocalSystemAccount{}.Execute(ctx, amt)
	if err != nil {
		return nil, fmt.Errorf("reading the local system account: %w", err)
	}
	log.Info("hostbased: local system account read", "user", acct.User)

	rt := o.Transport
	if rt == nil {
		lme, err := dev.Connect(ctx, heci.LMEClient)
		if errors.Is(err, heci.ErrNoClient) {
			return nil, fmt.Errorf("connecting to the LME client: %w: %w", ErrNoLocalInterface, err)
		}
		if err != nil {
			return nil, fmt.Errorf("connecting to the LME client: %w", err)
		}
		defer lme.Close()
		rt = &MessageTransport{T: lme}
	}
	c, err := wsman.NewClient(wsman.Options{Endpoint: Endpoint, Username: acct.User, Password: wsman.Secret(acct.Password.Reveal()),
		HTTPClient: &http.Client{Transport: rt}, Logger: log})
	if err != nil {
		return nil, err
	}
	g, err := c.GetGeneralSettings(ctx)
	if err != nil {
		return nil, fmt.Errorf("reading AMT_GeneralSettings locally: %w", err)
	}
	in := setupInput{NetAdminPassEncryptionType: 2, NetworkAdminPassword: DigestPassword("admin", g.DigestRealm, password)}
	// wsman's envelope masking does not know NetworkAdminPassword (a
	// password-equivalent digest): Setup goes through a client that logs
	// no envelopes.
	quiet, err := wsman.NewClient(wsman.Options{Endpoint: Endpoint, Username: acct.User, Password: wsman.Secret(acct.Password.Reveal()),
		HTTPClient: &http.Client{Transport: rt}})
	if err != nil {
		return nil, err
	}
	if err := quiet.Invoke(ctx, URIHostBasedSetupService, "Setup", nil, in, nil); err != nil {
		if me, ok := errors.AsType[*wsman.MethodError](err); ok {
			return nil, &SetupError{ReturnValue: uint32(me.Status)}
		}
		return nil, fmt.Errorf("calling IPS_HostBasedSetupService.Setup: %w", err)
	}
	res := &Result{Realm: g.DigestRealm, LocalUser: acct.User}
	cm, err := amthi.GetControlMode{}.Execute(ctx, amt)
	if err != nil {
		return nil, fmt.Errorf("reading the control mode after Setup: %w", err)
	}
	ps, err = amthi.GetProvisioningState{}.Execute(ctx, amt)
	if err != nil {
		return nil, fmt.Errorf("reading the provisioning state after Setup: %w", err)
	}
	res.ControlMode, res.State = cm.Mode, ps.State
	if cm.Mode != amthi.ControlClient {
		return res, fmt.Errorf("control mode %v: %w", cm.Mode, ErrNotClientMode)
	}
	log.Info("hostbased: activated in client control mode")
	return res, nil
}

// DigestPassword is NetworkAdminPassword with encoding 2: lower-case hex of
// MD5(user:realm:password).
func DigestPassword(user, realm string, password Password) wsman.Secret {
	sum := md5.Sum([]byte(user + ":" + realm + ":" + string(password)))
	return wsman.Secret(hex.EncodeToString(sum[:]))
}

// MessageTransport carries one HTTP/1.1 request per HECI message and reads
// one response per reply (the simulator's LME channel, UNCONFIRMED).
type MessageTransport struct{ T heci.Transport }

// RoundTrip sends req as one message.
func (m *MessageTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	var b bytes.Buffer
	err := req.Write(&b)
	if req.Body != nil {
		req.Body.Close()
	}
	if err != nil {
		return nil, fmt.Errorf("encoding the local WS-Man request: %w", err)
	}
	if max := m.T.MaxMessageLen(); max > 0 && b.Len() > max {
		return nil, fmt.Errorf("local WS-Man request of %d bytes exceeds the LME message size %d", b.Len(), max)
	}
	reply, err := m.T.Send(req.Context(), b.Bytes())
	if err != nil {
		return nil, fmt.Errorf("local WS-Man over LME: %w", err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(reply)), req)
	if err != nil {
		return nil, fmt.Errorf("decoding the local WS-Man response: %w", err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, fmt.Errorf("decoding the local WS-Man response: %w", err)
	}
	resp.Body = io.NopCloser(bytes.NewReader(body))
	return resp, nil
}
