package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/provstick/provstick/initramfs/heci"
	"github.com/provstick/provstick/initramfs/heci/amtinfo"
	"github.com/spf13/cobra"
)

func init() { register(newAmtinfoCmd) }

type amtinfoFlags struct {
	mei     string
	json    bool
	timeout time.Duration
	wait    time.Duration
}

func newAmtinfoCmd(e *env) *cobra.Command {
	var f amtinfoFlags
	cmd := &cobra.Command{
		Use:   "amtinfo",
		Short: "Show what the Intel ME says about AMT on this machine",
		Long: `amtinfo asks the Intel Management Engine over HECI (/dev/mei0) for the AMT
versions, SKU, provisioning state and control mode, UUID, DNS suffix, wired
MAC and IP address, and the trusted root certificate hashes (marking the ones
a user added). It needs the mei_me driver and, by default, root.

--mei chooses the device: mei:///dev/mei0 (default), unix:///path/to.sock
(the simulator, see "provstick sim me") or virtio:org.provstick.mei (a QEMU
virtio-serial port). Without --mei, a provstick.mei=ADDRESS parameter on the
kernel command line is used when there is one.`,
		Example: `  provstick amtinfo
  provstick amtinfo --json
  provstick amtinfo --mei unix:///run/provstick/me.sock --wait 10s`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !cmd.Flags().Changed("mei") {
				if b, err := os.ReadFile("/proc/cmdline"); err == nil {
					if a, ok := heci.AddressFromCmdline(string(b)); ok && a != "" {
						f.mei = a
					}
				}
			}
			return runAmtinfo(cmd.Context(), e, f)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.mei, "mei", heci.DefaultAddress, "ME device address: mei:///dev/mei0, unix:///path or virtio:NAME")
	fl.BoolVar(&f.json, "json", false, "print JSON instead of text")
	fl.DurationVar(&f.timeout, "timeout", 60*time.Second, "give up after this long (the ME may need a while after a reset)")
	fl.DurationVar(&f.wait, "wait", 0, "wait up to this long for the device or socket to appear")
	return cmd
}

func runAmtinfo(ctx context.Context, e *env, f amtinfoFlags) error {
	ctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	opts := &heci.Options{Logger: e.log}
	dev, err := openWaiting(ctx, f.mei, f.wait, opts)
	if err != nil {
		return explain(f.mei, err)
	}
	defer dev.Close()
	info, err := amtinfo.Collect(ctx, dev, &amtinfo.Options{Logger: e.log})
	if err != nil {
		return explain(f.mei, err)
	}
	if f.json {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(info)
	}
	return printAmtinfo(e.stdout, info)
}

// openWaiting opens the device, retrying for up to wait while it does not
// exist yet (a simulator or VM still starting).
func openWaiting(ctx context.Context, addr string, wait time.Duration, opts *heci.Options) (heci.Device, error) {
	deadline := time.Now().Add(wait)
	for {
		dev, err := heci.OpenDevice(ctx, addr, opts)
		if err == nil {
			return dev, nil
		}
		missing := errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, heci.ErrNoPort)
		if !missing || time.Now().After(deadline) {
			return nil, err
		}
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// explain adds a sentence a technician can act on to the usual failures.
func explain(addr string, err error) error {
	if hint := heci.DeviceHint(err); hint != "" {
		return fmt.Errorf("reading AMT information from %s: %w\n%s", addr, err, hint)
	}
	return fmt.Errorf("reading AMT information from %s: %w", addr, err)
}

func printAmtinfo(w io.Writer, in *amtinfo.Info) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	orNone := func(s string) string {
		if s == "" {
			return "(none)"
		}
		return s
	}
	amt := orNone(in.AMTVersion)
	var extra []string
	if in.BuildNumber != "" {
		extra = append(extra, "build "+in.BuildNumber)
	}
	if in.SKU != "" {
		extra = append(extra, "SKU "+in.SKU)
	}
	if len(extra) > 0 {
		amt += " (" + strings.Join(extra, ", ") + ")"
	}
	fmt.Fprintf(tw, "UUID:\t%s\n", in.UUID)
	fmt.Fprintf(tw, "BIOS version:\t%s\n", orNone(in.BIOSVersion))
	fmt.Fprintf(tw, "AMT version:\t%s\n", amt)
	fmt.Fprintf(tw, "ME firmware:\t%s\n", orNone(in.FirmwareVersion))
	fmt.Fprintf(tw, "Provisioning state:\t%s\n", in.ProvisioningState)
	fmt.Fprintf(tw, "Provisioning mode:\t%s\n", orNone(in.ProvisioningMode))
	fmt.Fprintf(tw, "Control mode:\t%s\n", orNone(in.ControlMode))
	fmt.Fprintf(tw, "Provisioning TLS mode:\t%s\n", orNone(in.TLSMode))
	fmt.Fprintf(tw, "DNS suffix:\t%s\n", orNone(in.DNSSuffix))
	if in.Wired != nil {
		dhcp, link := "static", "link down"
		if in.Wired.DHCP {
			dhcp = "DHCP"
		}
		if in.Wired.LinkUp {
			link = "link up"
		}
		fmt.Fprintf(tw, "Wired:\t%s %s (%s, %s)\n", in.Wired.MAC, in.Wired.IPv4, dhcp, link)
	}
	if len(in.Unsupported) > 0 {
		fmt.Fprintf(tw, "Not supported here:\t%s\n", strings.Join(in.Unsupported, ", "))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(w, "Trusted root certificate hashes (%d):\n", len(in.Hashes))
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, h := range in.Hashes {
		var tags []string
		if h.UserAdded {
			tags = append(tags, "user-added")
		} else {
			tags = append(tags, "default")
		}
		if !h.Active {
			tags = append(tags, "inactive")
		}
		fmt.Fprintf(tw, "  %d\t%s\t%s\t%s\t%s\n", h.Handle, h.Name, h.Algorithm, h.Hash, strings.Join(tags, ","))
	}
	return tw.Flush()
}
