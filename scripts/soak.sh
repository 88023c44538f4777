#!/usr/bin/env bash
# `make soak`: the crash loops of the store (kill -9 during allocation and
# import, SQLite and PostgreSQL), the agent (QEMU killed during the ledger
# write) and the kiosk (kill -9 during a provisioning run), scaled up by
# SOAK_SCALE (default 2), together with a 2,000-device provisioning load;
# then one table: runs, faults injected, entries lost (must be 0),
# duplicates (must be 0), devices that ended provisioned. Bounded: each
# part has its own timeout, the whole about 15 minutes on 2 cores.
set -uo pipefail
cd "$(dirname "$0")/.."
export PROVSTICK_SOAK_SCALE=${SOAK_SCALE:-2}
# The agent's power-cut loop counts its cuts itself.
export PROVSTICK_POWERCUT_RUNS=$((20 * PROVSTICK_SOAK_SCALE))
report=$(mktemp)
export PROVSTICK_SOAK_REPORT=$report
trap 'rm -f "$report"' EXIT
status=0
part() { # name timeout go-test-args...
	local name=$1 to=$2
	shift 2
	echo "== $name (scale $PROVSTICK_SOAK_SCALE, load $(cut -d' ' -f1-3 /proc/loadavg))"
	local start=$SECONDS
	if ! go test -count=1 -timeout "$to" "$@" >"$report.$name.log" 2>&1; then
		echo "   FAILED after $((SECONDS - start)) s:"
		tail -30 "$report.$name.log" | sed 's/^/   /'
		status=1
	else
		echo "   ok, $((SECONDS - start)) s"
	fi
	rm -f "$report.$name.log"
}
part store 6m -run '^TestCrashSafety$' ./kiosk/store
part kiosk 6m -run '^TestKillLoop$' ./kiosk
part agent 8m -run '^TestVMPowerCut$' ./initramfs/agent
part load 6m -run '^$' -bench '^BenchmarkProvisionSQLite$' -benchtime 1x ./kiosk -args -kiosk.devices=2000
want="store kill -9,kiosk kill -9,agent power cut,2000-device load"
echo
go run ./tools/soaktable -want "$want" "$report" || status=1
exit $status
