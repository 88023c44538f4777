package provision

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"

	"github.com/provstick/provstick/internal/tlspsk"
	"github.com/provstick/provstick/internal/wsman"
)

// Class is what kind of failure ended a provisioning run, in the words a
// technician sees.
type Class string

// Failure classes.
const (
	ClassWrongPPS           Class = "wrong PPS"
	ClassUnknownPID         Class = "PID unknown to the machine"
	ClassWrongPassword      Class = "wrong admin password"
	ClassUnreachable        Class = "device unreachable"
	ClassFlashLimit         Class = "flash write limit"
	ClassDataMissing        Class = "data missing at commit"
	ClassPasswordRefused    Class = "password refused by the machine"
	ClassNotInSetup         Class = "machine not in setup mode"
	ClassAlreadyProvisioned Class = "already provisioned elsewhere"
	ClassCopiedStick        Class = "PID held by another machine"
	ClassVerify             Class = "verification failed"
	ClassEntry              Class = "entry not provisionable"
	ClassUserLimit          Class = "user ACL full"
	ClassUserRefused        Class = "user entry refused"
	ClassNextPSKRefused     Class = "next PID/PPS refused"
	ClassPoolExhausted      Class = "pool exhausted"
	ClassDevice             Class = "device error"
	ClassKiosk              Class = "kiosk error"
)

// Advice is the technician's next step for a class.
func (c Class) Advice() string {
	switch c {
	case ClassWrongPPS:
		return "the machine holds another PPS for this PID (mixed-up or half-written record): re-run the stick on the machine, or check that its ledger belongs to this pool"
	case ClassUnknownPID:
		return "the machine does not know this PID: re-run the stick on the machine"
	case ClassWrongPassword:
		return "the machine refused the record's MEBx password: it was changed by hand or another record was applied; set it in the MEBx to the record's password, or unprovision in the MEBx and re-run the stick"
	case ClassUnreachable:
		return "check that the machine is on, cabled and on the kiosk's network; it will say hello again and the kiosk retries"
	case ClassFlashLimit:
		return "AMT refuses flash writes for now (write limit): leave the machine powered on for some hours, then power-cycle it so it says hello again; do not retry repeatedly"
	case ClassDataMissing:
		return "the machine found a setting missing at commit: power-cycle it so it says hello again; if it repeats, unprovision in the MEBx and re-run the stick"
	case ClassPasswordRefused:
		return "the machine refused the generated password (password rules of this firmware): report the firmware version"
	case ClassNotInSetup:
		return "the machine is not in setup mode: run the stick on it (again)"
	case ClassAlreadyProvisioned:
		return "the machine is already provisioned and not by this kiosk: unprovision it in the MEBx before re-running a stick"
	case ClassCopiedStick:
		return "two machines use the same PID (a copied stick?): find both machines and the stick, void the entry"
	case ClassVerify:
		return "the machine committed but does not show the kiosk-signed certificate or refuses the new password: check it by hand"
	case ClassEntry:
		return "the entry is not in a state that can be provisioned (free or void): check the pool"
	case ClassKiosk:
		return "the kiosk itself failed (store, CA): see the kiosk log"
	case ClassUserLimit:
		return "the machine's user ACL is full (AMT_STATUS_MAX_LIMIT_REACHED): remove user entries it holds already (a management console, or unprovision in the MEBx and re-run the stick), or configure fewer kiosk.users; it says hello again and the kiosk retries"
	case ClassUserRefused:
		return "the machine refused a user of kiosk.users (name, realm or access permission, e.g. a realm this firmware lacks): fix kiosk.users and restart the kiosk; the machine says hello again"
	case ClassNextPSKRefused:
		return "the machine refused the next PID/PPS (SetTLSPSK): the encoding (kiosk.psk_encoding) is unconfirmed and may be wrong for this firmware — see the hardware validation guide — or turn kiosk.next_psk off; the entry stays given to this machine (consumed), void it if it will never be used"
	case ClassPoolExhausted:
		return "no free entry left for the next PID/PPS: generate or import entries of this profile (provstick pool), or turn kiosk.next_psk off; the machine says hello again and the kiosk retries"
	}
	return "see the kiosk log for the device's answer"
}

// Failure is a classified provisioning failure.
type Failure struct {
	Class Class
	Step  int // spec §6 step where it happened; 0 outside the steps
	Err   error
}

func (f *Failure) Error() string {
	if f.Step > 0 {
		return fmt.Sprintf("step %d (%s): %s: %v", f.Step, stepName(f.Step), f.Class, f.Err)
	}
	return fmt.Sprintf("%s: %v", f.Class, f.Err)
}

func (f *Failure) Unwrap() error { return f.Err }

// Classify turns the error of a step into a Failure.
func Classify(step int, err error) *Failure {
	if f, ok := errors.AsType[*Failure](err); ok {
		return f
	}
	c := classOf(err)
	if c == ClassDevice {
		c = classOfStep(step, err)
	}
	return &Failure{Class: c, Step: step, Err: err}
}

// classOfStep classifies the return codes of the optional steps (their
// numbers mean other things in other methods). AddUserAclEntryEx: 23
// max entries, 12 invalid name, 2055 invalid realm, 36 invalid parameter
// (2054 invalid password and 2058 duplicate are handled elsewhere: the
// first is ClassPasswordRefused, the second means present). SetTLSPSK: 42
// and 43 invalid PID/PPS format, 16 not permitted, 36.
func classOfStep(step int, err error) Class {
	is := func(ss ...wsman.Status) bool {
		for _, s := range ss {
			if errors.Is(err, s) {
				return true
			}
		}
		return false
	}
	switch {
	case step == StepUsers && is(wsman.StatusMaxLimitReached):
		return ClassUserLimit
	case step == StepUsers && is(wsman.StatusInvalidName, wsman.StatusInvalidRealm, wsman.StatusInvalidParameter, wsman.StatusNotPermitted):
		return ClassUserRefused
	case step == StepNextPSK && is(wsman.StatusInvalidPIDFormat, wsman.StatusInvalidPPSFormat, wsman.StatusNotPermitted, wsman.StatusInvalidParameter):
		return ClassNextPSKRefused
	}
	return ClassDevice
}

func classOf(err error) Class {
	var ne net.Error
	switch {
	case errors.Is(err, tlspsk.ErrBadKey):
		return ClassWrongPPS
	case errors.Is(err, tlspsk.ErrUnknownIdentity):
		return ClassUnknownPID
	case errors.Is(err, wsman.ErrUnauthorized):
		return ClassWrongPassword
	case errors.Is(err, wsman.StatusFlashWriteLimitExceeded):
		return ClassFlashLimit
	case errors.Is(err, wsman.StatusDataMissing):
		return ClassDataMissing
	case errors.Is(err, wsman.StatusInvalidPassword):
		return ClassPasswordRefused
	case errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH),
		errors.Is(err, syscall.ECONNRESET), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF),
		errors.Is(err, tlspsk.ErrHandshakeClosed), errors.Is(err, context.DeadlineExceeded),
		errors.As(err, &ne) && ne.Timeout():
		return ClassUnreachable
	}
	var op *net.OpError
	if errors.As(err, &op) {
		return ClassUnreachable
	}
	return ClassDevice
}
