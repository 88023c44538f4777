package cli

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/provstick/provstick/initramfs/heci/amthi"
	"github.com/provstick/provstick/internal/amtsim"
	"github.com/spf13/cobra"
)

func init() { register(newSimCmd) }

func newSimCmd(e *env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "sim",
		Short: "Run simulated AMT machines for tests and demos",
	}
	cmd.AddCommand(newSimMECmd(e))
	return cmd
}

type simMEFlags struct {
	listen     string
	uuid       string
	state      string
	control    string
	amtVersion string
	dnsSuffix  string
	pid        string
	noAMT      bool
	notReady   time.Duration
}

func newSimMECmd(e *env) *cobra.Command {
	var f simMEFlags
	cmd := &cobra.Command{
		Use:   "me",
		Short: "Serve a simulated Intel ME (HECI) on a Unix socket",
		Long: `sim me serves the ME side of one simulated AMT machine: the AMT host
interface and the MKHI firmware version, over the stream framing of
specs/heci.md §5, until interrupted.

Point "provstick amtinfo --mei unix:///path" at it, or start QEMU with the
socket as a virtio-serial port named org.provstick.mei:

  -device virtio-serial -chardev socket,id=me,path=/path \
  -device virtserialport,chardev=me,name=org.provstick.mei

and run "provstick amtinfo --mei virtio:org.provstick.mei" in the guest.`,
		Example: `  provstick sim me --listen unix:///tmp/me.sock
  provstick sim me --listen unix:///tmp/me.sock --state in --pid ABCD0123 --dns-suffix lab.example`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runSimME(cmd.Context(), e, f)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.listen, "listen", "", "address to listen on: unix:///path/to.sock (required)")
	fl.StringVar(&f.uuid, "uuid", "", "device UUID (default 939b524b-13d4-1d18-e487-1c697a6b7a2b)")
	fl.StringVar(&f.state, "state", "pre", "provisioning state: pre, in or post")
	fl.StringVar(&f.control, "control", "", "control mode when --state post: client or admin (default admin)")
	fl.StringVar(&f.amtVersion, "amt-version", "", "AMT version string (default 11.8.50)")
	fl.StringVar(&f.dnsSuffix, "dns-suffix", "", "DNS suffix the ME holds")
	fl.StringVar(&f.pid, "pid", "", "PID stored by setup.bin (with --state in)")
	fl.BoolVar(&f.noAMT, "no-amt", false, "simulate a SKU without AMT (the AMT host interface does not exist)")
	fl.DurationVar(&f.notReady, "not-ready", 0, "stay not ready for this long after starting")
	_ = cmd.MarkFlagRequired("listen")
	return cmd
}

func simState(f simMEFlags) (amtsim.State, error) {
	st := amtsim.DefaultState()
	if f.uuid != "" {
		u, err := amthi.ParseUUID(f.uuid)
		if err != nil {
			return st, fmt.Errorf("flag --uuid: %w", err)
		}
		st.UUID = u
	}
	if f.amtVersion != "" {
		st.AMTVersion = f.amtVersion
	}
	st.AMTPresent = !f.noAMT
	st.DNSSuffix, st.PKISuffix = f.dnsSuffix, f.dnsSuffix
	switch strings.ToLower(f.state) {
	case "pre":
	case "in":
		st.ProvisioningState, st.ProvisioningMode, st.TLSMode = amthi.StateIn, amthi.ModeEnterprise, amthi.TLSModePKI
		if f.pid != "" {
			st.PID, st.TLSMode = f.pid, amthi.TLSModePSK
		}
	case "post":
		st.ProvisioningState, st.ProvisioningMode, st.ControlMode = amthi.StatePost, amthi.ModeEnterprise, amthi.ControlAdmin
	default:
		return st, fmt.Errorf("flag --state: invalid value %q (want pre, in or post)", f.state)
	}
	switch strings.ToLower(f.control) {
	case "":
	case "admin":
		st.ControlMode = amthi.ControlAdmin
	case "client":
		st.ControlMode = amthi.ControlClient
	default:
		return st, fmt.Errorf("flag --control: invalid value %q (want client or admin)", f.control)
	}
	if f.control != "" && st.ProvisioningState != amthi.StatePost {
		return st, fmt.Errorf("flag --control: only with --state post")
	}
	if f.pid != "" && st.ProvisioningState != amthi.StateIn {
		return st, fmt.Errorf("flag --pid: only with --state in")
	}
	return st, nil
}

func runSimME(ctx context.Context, e *env, f simMEFlags) error {
	st, err := simState(f)
	if err != nil {
		return err
	}
	ln, err := amtsim.Listen(f.listen)
	if err != nil {
		return err
	}
	srv := amtsim.NewMEServer(amtsim.NewDevice(st), &amtsim.MEOptions{Logger: e.log})
	defer srv.Close()
	if f.notReady > 0 {
		srv.NotReadyFor(f.notReady)
	}
	e.log.Info("ME simulator listening", "address", f.listen, "uuid", st.UUID.String(), "state", st.ProvisioningState.String())
	if err := srv.Serve(ctx, ln); err != nil {
		return err
	}
	e.log.Info("ME simulator stopped")
	return nil
}
