package main

import (
	"context"
	"fmt"
	"math"
	"os"
	"runtime"
	"strings"
	"time"

	"github.com/provstick/provstick/internal/vm"
)

// machineInfo describes where the figures were measured.
type machineInfo struct {
	CPU, Kernel, Memory, Load, Go, QEMU string
	Cores                               int
}

func machine() machineInfo {
	m := machineInfo{Cores: runtime.NumCPU(), Go: runtime.Version(), QEMU: "TCG only: /dev/kvm is missing or does not run guests (boot figures are TCG)"}
	if vm.Probe(context.Background(), "qemu-system-x86_64") == "kvm" {
		m.QEMU = "KVM works (boot figures as the scripts say)"
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "MemTotal:") {
				var kib float64
				fmt.Sscan(strings.TrimSpace(strings.TrimPrefix(l, "MemTotal:")), &kib)
				m.Memory = fmt.Sprintf("%.1f GiB", kib/(1<<20))
			}
		}
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		f := strings.Fields(string(b))
		if len(f) >= 3 {
			m.Load = strings.Join(f[:3], " ")
		}
	}
	return m
}

func num(v float64) string {
	switch {
	case v == 0:
		return "0"
	case math.Abs(v) >= 1000:
		return fmt.Sprintf("%.0f", v)
	case math.Abs(v) >= 10:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.3g", v)
	}
}

func mdEscape(s string) string { return strings.ReplaceAll(s, "|", "\\|") }

// report writes the Markdown report.
func report(areas []area, m machineInfo, now time.Time) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# provstick benchmark report\n\n")
	fmt.Fprintf(&b, "Written on %s by `make bench`; every figure is next to its peer measured in the same run, and each script's output (below its table) gives the load average it ran at.\n\n", now.UTC().Format("2006-01-02 15:04 MST"))
	fmt.Fprintf(&b, "| machine | |\n|---|---|\n")
	fmt.Fprintf(&b, "| CPU | %s |\n| cores | %d |\n| memory | %s |\n| kernel | %s |\n| Go | %s |\n| load average when the report was written | %s |\n| QEMU acceleration | %s |\n\n",
		mdEscape(m.CPU), m.Cores, m.Memory, m.Kernel, m.Go, m.Load, m.QEMU)
	fmt.Fprintf(&b, "\"×\" is how many times better ours is than the peer (above 1: ours is better), whichever way the unit runs.\n\n")
	var failed []string
	for _, a := range areas {
		if a.Status != "ok" {
			failed = append(failed, fmt.Sprintf("`%s` (%s)", a.Name, a.Status))
		}
	}
	if len(failed) > 0 {
		fmt.Fprintf(&b, "**Scripts that failed:** %s — their figures below may be missing.\n\n", strings.Join(failed, ", "))
	}
	for _, a := range areas {
		fmt.Fprintf(&b, "## %s\n\n", a.Name)
		if len(a.Figures) > 0 {
			fmt.Fprintf(&b, "| figure | ours | peer | peer's | unit | × | target |\n|---|---:|---|---:|---|---:|---|\n")
			for _, f := range a.Figures {
				adv := "n/a"
				if v := f.Advantage(); !math.IsNaN(v) {
					adv = fmt.Sprintf("%.2f", v)
				}
				fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s |\n", mdEscape(f.Name), num(f.Ours), mdEscape(f.Peer), num(f.PeerValue), mdEscape(f.Unit), adv, mdEscape(f.Target))
			}
			fmt.Fprintf(&b, "\n![%s](chart-%s.png)\n\n", a.Name, a.Name)
		} else {
			fmt.Fprintf(&b, "No figures in the machine-readable form; the script's output is below.\n\n")
		}
		fmt.Fprintf(&b, "<details><summary>output of scripts/%s.sh</summary>\n\n```\n%s\n```\n</details>\n\n", a.Name, strings.Join(a.Raw, "\n"))
	}
	return b.String()
}
