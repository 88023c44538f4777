#!/usr/bin/env bash
# Figures for the agent's kiosk reachability check (issue 8, check 7),
# each against its peer in the same run:
#   size: the compressed initramfs of images/check-kiosk.yaml (NIC drivers
#         packed) vs images/default.yaml (the check off), real kernel and
#         agent (builder TestCheckKioskInitramfs). Goal: ≤ 6 MiB.
#   boot: QEMU (TCG, SeaBIOS) start → ledger fsync with the check on
#         (TestVMKioskCheck: e1000e on a tap in a network namespace with the
#         kiosk's DHCP, DNS and hello listener) vs the default stick's first
#         boot of TestVMAgent (the check off), and the check's own time: from
#         its start at init and the part Run waited for it.
# BOOTS=0 skips the VM part. Needs root (network namespace, tap). TCG
# timings depend on load: the load average is printed before and after.
set -euo pipefail
cd "$(dirname "$0")/.."
boots=${BOOTS:-1}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
. scripts/bench-lib.sh

echo "bench-kiosk-check: $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)"
go test -count=1 -run '^TestCheckKioskInitramfs$' -v ./builder >"$tmp/size.txt" 2>&1 || { cat "$tmp/size.txt" >&2; exit 1; }
read -r def ck < <(sed -n 's/.*initramfs: default \([0-9]*\) bytes.*check-kiosk \([0-9]*\) bytes.*/\1 \2/p' "$tmp/size.txt")
awk -v d="$def" -v c="$ck" 'BEGIN {
	printf "initramfs, zstd\n  %-40s %6.2f MiB (goal 6)\n  %-40s %6.2f MiB\n  %-40s %6.2f\n", "check-kiosk (NIC drivers)", c/1048576, "peer: default (check off)", d/1048576, "ratio", c/d
}'
figure "initramfs with the kiosk check's NIC drivers" "$(awk -v c="$ck" 'BEGIN {printf "%.2f", c/1048576}')" "the default initramfs" "$(awk -v d="$def" 'BEGIN {printf "%.2f", d/1048576}')" MiB lower "≤ 6 MiB"

if [ "$boots" != 0 ]; then
	go test -count=1 -run '^TestVMKioskCheck$' -v -timeout 20m ./initramfs/agent >"$tmp/vmk.txt" 2>&1 || { cat "$tmp/vmk.txt" >&2; exit 1; }
	go test -count=1 -run '^TestVMAgent$/^1-legacy-A$' -v -timeout 20m ./initramfs/agent >"$tmp/vma.txt" 2>&1 || { cat "$tmp/vma.txt" >&2; exit 1; }
	grep -h '^BENCH ' "$tmp/vmk.txt" "$tmp/vma.txt" | sed 's/^BENCH //' | awk '
	{
		delete v
		for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
		if (v["boot"] == "kiosk-check") { on = v["qemu_to_fsync"]; chk = v["kiosk_check"]; inrun = v["kiosk_check_in_run"] } else { off = v["qemu_to_fsync"] }
	} END {
		printf "boot to ledger fsync under TCG (SeaBIOS, s from QEMU start)\n"
		printf "  %-40s %6.2f s\n  %-40s %6.2f s\n  %-40s %6.2f\n", "check on", on, "peer: check off (TestVMAgent boot 1)", off, "ratio", on/off
		printf "  the check itself: %.2f s from its start at init, %.2f s of it on Run'"'"'s path\n", chk, inrun
		printf "@figure {\"name\":\"boot to ledger fsync with the kiosk check, TCG\",\"ours\":%.2f,\"peer\":\"the same stick type without the check\",\"peer_value\":%.2f,\"unit\":\"s\",\"better\":\"lower\",\"target\":\"\"}\n", on, off
	}'
fi
echo "bench-kiosk-check: load after $(cut -d' ' -f1-3 /proc/loadavg)"
