package agent

import (
	"fmt"
	"strings"

	"github.com/provstick/provstick/internal/ledger"
	"github.com/provstick/provstick/setupbin"
)

// render writes the technician's screen for rec: a headline, then what to
// do. ok is true only when the record went to this machine and AMT is in
// setup mode, waiting to say hello to the kiosk.
func render(rec *ledger.Record, lg *ledger.Log, h setupbin.Header) (ok bool, msg string) {
	var b strings.Builder
	line := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	pid := rec.PID
	if pid == "" {
		pid = "unknown"
	}
	machine := "this machine"
	if a := rec.AMT; a != nil {
		machine = fmt.Sprintf("this machine (UUID %s, AMT %s)", a.UUID, orUnknown(a.AMTVersion))
	}
	state := ""
	if rec.AMT != nil {
		state = rec.AMT.ProvisioningState
	}
	left := int(h.RecordCount) - int(h.Consumed)
	act := rec.Activation
	activated := act != nil && act.Result == ledger.ActivationActivated
	actShown := false

	switch rec.Case {
	case ledger.CaseNormal, ledger.CaseMultiple, ledger.CaseNoConsume:
		head := fmt.Sprintf("Record %d (PID %s) → %s.", rec.Record, pid, machine)
		if rec.Kind == KindPKI {
			head = fmt.Sprintf("Record %d (PKI, site root) → %s.", rec.Record, machine)
		}
		switch {
		case rec.AMT == nil:
			line("%s", head)
			line("PROBLEM: the Management Engine did not answer (%s).", reason(rec, "amt"))
			line("The record is recorded against this machine's DMI identity only. Tell the kiosk operator; the kiosk will match the machine by its hello.")
		case activated:
			ok, actShown = rec.Case != ledger.CaseMultiple, true
			line("%s", head)
			line("AMT is ACTIVATED in client control mode (realm %s). Remove the stick; the machine is managed with the site's admin password.", orUnknown(act.Realm))
		case state == "in":
			ok = rec.Case != ledger.CaseMultiple
			line("%s", head)
			line("Remove the stick; the machine will say hello to the kiosk.")
		case state == "post" && act != nil && rec.AMT.ControlMode == "client":
			actShown = true
			line("%s", head)
			line("ATTENTION: AMT is already in client control mode, so it was not activated again: an earlier boot of this stick activated it (and its ledger line was lost, e.g. to a power cut), or someone else did.")
			line("Nothing was changed. Tell the kiosk operator; the site's admin password for this machine can be computed from its UUID.")
		case state == "post":
			line("%s", head)
			line("PROBLEM: AMT is already provisioned (control mode %s); the record was not needed.", orUnknown(rec.AMT.ControlMode))
			line("Unprovision the machine in MEBx if it should be provisioned by this kiosk, then boot the stick again.")
		default:
			line("%s", head)
			line("PROBLEM: AMT is not in setup mode (provisioning state %q): the BIOS took the record but did not apply it.", state)
			line("Check the BIOS setting for USB provisioning (\"USB key provisioning\" / \"Unconfigure AMT on next boot\") and the MEBx password in the record, then try another record.")
		}
		if rec.Case == ledger.CaseMultiple {
			line("WARNING: %d records were consumed since this stick last booted a machine; records %s went to machines that never booted the stick. Tell the kiosk operator.", len(rec.Skipped)+1, ranges(rec.Skipped))
		}
		if rec.Case == ledger.CaseNoConsume {
			line("Note: this setup.bin is marked do-not-consume; every machine gets the same record.")
		}
	case ledger.CaseNone:
		line("No record was consumed: the BIOS did not take one from this stick since its last boot.")
		if left <= 0 && h.RecordCount > 0 {
			line("The stick is OUT OF RECORDS (%d of %d used). Take it back to the kiosk for a new one.", h.Consumed, h.RecordCount)
		} else {
			line("Enable USB provisioning in the BIOS/MEBx, plug this stick in before power-on and let the BIOS apply the record and reboot; then boot from the stick again.")
		}
		if rec.AMT != nil {
			line("This machine: UUID %s, AMT %s, provisioning state %s.", rec.AMT.UUID, orUnknown(rec.AMT.AMTVersion), orUnknown(state))
		}
	case ledger.CaseRollback:
		prev := uint32(0)
		if rec.PrevConsumed != nil {
			prev = *rec.PrevConsumed
		}
		line("PROBLEM: setup.bin's consumed counter (%d) is LOWER than the ledger's (%d): an older copy of setup.bin was put back on this stick.", rec.Consumed, prev)
		line("Nothing was attributed to this machine. Do not use this stick again; take it to the kiosk operator (records may be handed out twice).")
	default:
		line("PROBLEM: setup.bin could not be read (%s).", reason(rec, "setupbin"))
		line("Take the stick back to the kiosk operator.")
	}
	if act != nil && !actShown {
		switch act.Result {
		case ledger.ActivationActivated:
			line("AMT is ACTIVATED in client control mode (realm %s); it is managed with the site's admin password.", orUnknown(act.Realm))
		case ledger.ActivationFailed:
			ok = false
			line("PROBLEM: host-based activation to client control mode FAILED: %s.", act.Error)
			line("The machine was NOT activated; tell the kiosk operator (the ledger line says why).")
		default:
			if rec.AMT != nil && state != "post" {
				line("Note: host-based activation was %s.", act.Error)
			}
		}
	}
	if kc := rec.KioskCheck; kc != nil {
		if kc.Result != ledger.KioskReachable {
			ok = false
		}
		for _, l := range KioskLines(kc) {
			line("%s", l)
		}
	}
	if left > 0 && left <= 2 && rec.Case != ledger.CaseNone {
		line("Note: only %d record(s) left on this stick.", left)
	}
	if len(lg.Findings) > 0 {
		line("Note: the ledger had %d damaged or torn line(s) (power cut?); they were kept and skipped.", len(lg.Findings))
	}
	var missing []string
	for _, m := range rec.Missing {
		missing = append(missing, m.Source)
	}
	if len(missing) > 0 {
		line("Not available on this machine: %s.", strings.Join(missing, ", "))
	}
	line("Ledger line %d written to the stick.", rec.Seq)
	return ok, b.String()
}

func reason(rec *ledger.Record, src string) string {
	for _, m := range rec.Missing {
		if m.Source == src {
			return m.Reason
		}
	}
	return "no reason given"
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}

// ranges prints 3,4,5,9 as "3–5, 9".
func ranges(ns []int) string {
	var parts []string
	for i := 0; i < len(ns); {
		j := i
		for j+1 < len(ns) && ns[j+1] == ns[j]+1 {
			j++
		}
		if j > i {
			parts = append(parts, fmt.Sprintf("%d–%d", ns[i], ns[j]))
		} else {
			parts = append(parts, fmt.Sprint(ns[i]))
		}
		i = j + 1
	}
	return strings.Join(parts, ", ")
}
