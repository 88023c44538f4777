package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/provstick/provstick/initramfs/heci"
	"github.com/provstick/provstick/initramfs/heci/amthi"
	"github.com/provstick/provstick/initramfs/hostbased"
	"github.com/provstick/provstick/internal/ledger"
)

// Activation is host-based activation to client control mode
// (specs/pki.md §6), as agent.json asks for it.
//
// Order and crash safety: Run activates after it has attributed the
// record and asked the machine, and appends its one line afterwards with
// the outcome. The ledger stays one line per boot, and the line says what
// happened rather than what was about to. A power cut between Setup and
// the fsync leaves an activated machine without a line, as a cut before
// any append leaves a consumed record without one; nothing is lost that
// cannot be recovered: the admin password is never chosen at random on
// the target (derived from the site secret and the AMT UUID, or fixed
// for the site), so the kiosk can compute it, and the next boot of the
// stick on that machine still sees the record unattributed, attributes it
// and records "already provisioned (control mode client)".
type Activation struct {
	Mode string // ModeClientControl
	// Password gives the admin password for the machine with this AMT
	// UUID.
	Password func(uuid string) (hostbased.Password, error)
	// Source is the ledger's activation.password: "derived:<key id>" or
	// "fixed:<key id>".
	Source string
	// Timeout bounds opening the ME and the activation; zero means 60 s.
	Timeout time.Duration
	// Options for hostbased.Activate (tests set Transport); the Logger
	// is Config's.
	Options hostbased.Options
}

// activate runs the activation on the machine amt describes and returns
// the ledger's account of it. It never returns or logs the password.
func activate(ctx context.Context, cfg Config, amt *ledger.AMT, log *slog.Logger) *ledger.Activation {
	act := cfg.Activate
	a := &ledger.Activation{Mode: act.Mode, Password: act.Source}
	start := time.Now()
	defer func() { a.ElapsedMS = time.Since(start).Milliseconds() }()
	switch {
	case amt == nil:
		a.Result, a.Error = ledger.ActivationSkipped, "not tried: the Management Engine did not answer"
		return a
	case amt.ProvisioningState == "post":
		a.Result, a.Error = ledger.ActivationSkipped, fmt.Sprintf("not tried: AMT is already provisioned (control mode %s)", orUnknown(amt.ControlMode))
		a.ControlMode, a.ProvisioningState = amt.ControlMode, amt.ProvisioningState
		return a
	}
	fail := func(err error) *ledger.Activation {
		a.Result, a.Error = ledger.ActivationFailed, err.Error()
		log.Warn("host-based activation failed", "err", err)
		return a
	}
	pw, err := act.Password(amt.UUID)
	if err != nil {
		return fail(fmt.Errorf("choosing the admin password: %w", err))
	}
	d := act.Timeout
	if d <= 0 {
		d = 60 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	addr := cfg.MEAddress
	if addr == "" {
		addr = heci.DefaultAddress
	}
	open := cfg.OpenME
	if open == nil {
		open = heci.OpenDevice
	}
	dev, err := open(ctx, addr, &heci.Options{Logger: log})
	if err != nil {
		return fail(fmt.Errorf("opening the ME at %s: %w", addr, err))
	}
	defer dev.Close()
	opts := act.Options
	opts.Logger = log
	res, err := hostbased.Activate(ctx, dev, pw, &opts)
	if res != nil {
		a.Realm, a.ControlMode, a.ProvisioningState = res.Realm, controlName(res), stateName(res)
	}
	if errors.Is(err, hostbased.ErrAlreadyProvisioned) {
		// Provisioned between the query and now (another boot's line was
		// lost?): say so as a skip.
		a.Result, a.Error = ledger.ActivationSkipped, "not tried: "+err.Error()
		return a
	}
	if err != nil {
		return fail(err)
	}
	a.Result = ledger.ActivationActivated
	log.Info("host-based activation: client control mode", "realm", res.Realm)
	return a
}

// controlName and stateName use amtinfo's words (the ledger's amt block).
func controlName(r *hostbased.Result) string {
	switch r.ControlMode {
	case amthi.ControlPre:
		return "none"
	case amthi.ControlClient:
		return "client"
	case amthi.ControlAdmin:
		return "admin"
	}
	return fmt.Sprintf("unknown(%d)", uint32(r.ControlMode))
}

func stateName(r *hostbased.Result) string {
	switch r.State {
	case amthi.StatePre:
		return "pre"
	case amthi.StateIn:
		return "in"
	case amthi.StatePost:
		return "post"
	}
	return fmt.Sprintf("unknown(%d)", uint32(r.State))
}
