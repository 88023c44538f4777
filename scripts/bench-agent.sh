#!/usr/bin/env bash
# Figures for the agent (issue 8), each against its peer in the same run:
#   boot: QEMU (TCG) start → the agent's ledger fsync marker on the serial
#         console, for the default image under SeaBIOS (legacy) and OVMF
#         (UEFI) with swtpm and the ME simulator attached (TestVMAgent's
#         boots 1–3; boot 4 has no TPM), split into firmware + boot loader,
#         kernel to /init, module loading and the agent; the peer is the
#         same boot's "provstick: ready" line (init up, modules loaded: what
#         a minimal agent reaches). Goals: ≤ 12 s to the ledger, ≤ 2 s agent
#         start → fsync excluding the ME.
#   run:  the agent library's whole run on a stick directory on this disk
#         (ME simulator over a Unix socket) vs the bare ledger append with
#         fsync (Go benchmarks, median of COUNT).
#   activate: the agent's run on a PKI stick with host-based activation to
#         client control mode vs the same run without it (Go benchmarks,
#         fresh simulated machine per run); and under TCG, TestVMAgentPKI's
#         boots: ledger fsync with activation vs without, and the
#         activation's own time from the ledger line.
# COUNT (default 5) tunes the Go benchmark; BOOTS (default 3) is how many
# times TestVMAgent runs (medians); BOOTS=0 skips the VM part.
# TCG timings depend on load: the load average is printed before and after.
set -euo pipefail
cd "$(dirname "$0")/.."
count=${COUNT:-5}
boots=${BOOTS:-3}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

echo "bench-agent: $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)"

go test -run '^$' -bench 'BenchmarkRun$|BenchmarkAppendOnly|BenchmarkRunActivate|BenchmarkRunPKI' -benchtime=50x -count "$count" ./initramfs/agent >"$tmp/bench.txt"
median() {
	grep -E "^$1-[0-9]+ " "$tmp/bench.txt" | awk '{print $3/1e6}' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'
}
run=$(median BenchmarkRun)
app=$(median BenchmarkAppendOnly)
awk -v r="$run" -v a="$app" -v c="$count" 'BEGIN {
	printf "agent run on the host (median of %d x 50)\n", c
	printf "  %-52s %8.2f ms\n", "agent.Run (manifest, ledger, setup.bin, ME, append)", r
	printf "  %-52s %8.2f ms\n", "peer: ledger.Append alone (write + 2 fsyncs)", a
	printf "  %-52s %8.2f\n", "ratio", r / a
}'
. scripts/bench-lib.sh
figure "agent.Run on the host" "$run" "ledger.Append alone" "$app" ms lower
act=$(median BenchmarkRunActivate)
pki=$(median BenchmarkRunPKI)
awk -v r="$act" -v a="$pki" -v c="$count" 'BEGIN {
	printf "host-based activation on the host (median of %d x 50)\n", c
	printf "  %-52s %8.2f ms\n", "agent.Run on a PKI stick with activation", r
	printf "  %-52s %8.2f ms\n", "peer: the same run without activation", a
	printf "  %-52s %8.2f\n", "ratio", r / a
}'

if [ "$boots" != 0 ]; then
	# TCG boot times swing by a second or more from run to run on a shared
	# machine (the same boot took 12.5 and 14.9 s minutes apart), so
	# TestVMAgent runs BOOTS times and each figure is the median.
	for ((r = 1; r <= boots; r++)); do
		go test -count=1 -run '^TestVMAgent$' -v -timeout 30m ./initramfs/agent >"$tmp/vm.txt" 2>&1 || {
			cat "$tmp/vm.txt" >&2
			exit 1
		}
		grep '^BENCH ' "$tmp/vm.txt" | sed 's/^BENCH //' >>"$tmp/vmall.txt"
	done
	echo "boot to ledger under TCG (TestVMAgent run $boots times, medians; s from QEMU start)"
	echo "  each run's boot to ledger fsync, s:"
	awk '{ split($1, b, "="); split($3, f, "="); l[b[2]] = l[b[2]] " " f[2]; if (!(b[2] in seen)) { seen[b[2]] = 1; order[++n] = b[2] } }
		END { for (i = 1; i <= n; i++) printf "    %-20s%s\n", order[i], l[order[i]] }' "$tmp/vmall.txt"
	awk '
	function fig(name, ours, peer, pv, unit, better, target) {
		printf "@figure {\"name\":\"%s\",\"ours\":%.2f,\"peer\":\"%s\",\"peer_value\":%.2f,\"unit\":\"%s\",\"better\":\"%s\",\"target\":\"%s\"}\n", name, ours, peer, pv, unit, better, target
	}
	function med(key,   k, i, j, t, a) {
		k = split(vals[key], a, " ")
		for (i = 1; i <= k; i++) for (j = i + 1; j <= k; j++) if (a[j] + 0 < a[i] + 0) { t = a[i]; a[i] = a[j]; a[j] = t }
		return a[int((k + 1) / 2)]
	}
	{
		delete v
		for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
		b = v["boot"]
		if (!(b in seen)) { seen[b] = 1; order[++n] = b }
		v["own"] = v["agent_init_to_fsync"] - v["agent_me"]
		for (f in v) if (f != "boot") vals[b SUBSEP f] = vals[b SUBSEP f] " " v[f]
	}
	END {
		for (i = 1; i <= n; i++) {
			b = order[i]
			printf "  %-20s ledger fsync %5.1f s (goal 12)  peer ready %5.1f s  ratio %.2f | firmware+loader %5.1f  kernel %4.1f  modules %4.1f  agent init→fsync %4.2f (ME %4.2f, own %4.2f, goal 2)\n",
				b, med(b SUBSEP "qemu_to_fsync"), med(b SUBSEP "qemu_to_ready"), med(b SUBSEP "qemu_to_fsync") / med(b SUBSEP "qemu_to_ready"),
				med(b SUBSEP "firmware_loader"), med(b SUBSEP "kernel_to_init"), med(b SUBSEP "modules"), med(b SUBSEP "agent_init_to_fsync"), med(b SUBSEP "agent_me"), med(b SUBSEP "own")
			fig("boot to ledger fsync under TCG, " b, med(b SUBSEP "qemu_to_fsync"), "the same boot reaching ready", med(b SUBSEP "qemu_to_ready"), "s", "lower", "≤ 12 s")
			fig("agent init to ledger fsync, without ME waits, " b, med(b SUBSEP "own"), "the goal", 2, "s", "lower", "≤ 2 s")
		}
	}' "$tmp/vmall.txt"
fi
if [ "$boots" != 0 ]; then
	go test -count=1 -run '^TestVMAgentPKI$' -v -timeout 30m ./initramfs/agent >"$tmp/vmpki.txt" 2>&1 || {
		cat "$tmp/vmpki.txt" >&2
		exit 1
	}
	echo "PKI stick boot to ledger under TCG (TestVMAgentPKI, SeaBIOS; s from QEMU start)"
	grep '^BENCH ' "$tmp/vmpki.txt" | sed 's/^BENCH //' | awk '{
		for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
		if (v["agent_activate"] > 0) { with = v["qemu_to_fsync"]; act = v["agent_activate"] } else { without = v["qemu_to_fsync"] }
	} END {
		printf "  ledger fsync with activation %5.1f s  peer without %5.1f s  ratio %.2f | activation itself %4.2f s\n", with, without, with / without, act
	}'
fi
echo "bench-agent: load after $(cut -d' ' -f1-3 /proc/loadavg)"
