#!/usr/bin/env bash
# Runs every fuzz target of the module for a bounded time each
# (default 5s; first argument overrides). Crashers land under the package's
# testdata/fuzz/<Target>/ and then replay in plain `go test`.
#
# Go 1.26's fuzz coordinator can report "context deadline exceeded" at the
# -fuzztime boundary on a loaded machine without having found anything
# (golang/go#75804, fixed in Go 1.27). A real finding always writes a
# failing input; so a run that fails with only that message is run once
# more, and if it does so again it is reported as a flake, not a failure.
#
# Each new interesting input is minimized before the worker goes on, for up
# to a minute by default: with inputs of some kilobytes (stick images) a
# short run would spend all its time minimizing. Minimization is capped
# at FUZZMINIMIZE executions (default 200); failing inputs are still
# written and replayed.
set -euo pipefail
fuzztime=${1:-5s}
minimize=${FUZZMINIMIZE:-200x}
cd "$(dirname "$0")/.."
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0 flakes=0 ran=0

deadline_flake() {
	grep -q 'context deadline exceeded' "$log" &&
		! grep -qE 'Failing input written|panic:' "$log" &&
		! grep -qE '^[[:space:]]+[A-Za-z0-9_]+\.go:[0-9]+:' "$log"
}

while IFS= read -r file; do
	dir=$(dirname "$file")
	dir=${dir#./}
	for target in $(grep -oE '^func (Fuzz[A-Za-z0-9_]+)\(' "$file" | sed -E 's/^func (Fuzz[A-Za-z0-9_]+)\(/\1/'); do
		ran=$((ran + 1))
		for attempt in 1 2; do
			echo "fuzz: ./$dir $target ($fuzztime)"
			if go test -run='^$' -fuzz="^${target}\$" -fuzztime="$fuzztime" -fuzzminimizetime="$minimize" "./$dir" >"$log" 2>&1; then
				break
			fi
			if deadline_flake; then
				if [ $attempt = 1 ]; then
					echo "fuzz: ./$dir $target: context deadline exceeded with no failing input (golang/go#75804): once more"
					continue
				fi
				echo "fuzz: ./$dir $target: the Go 1.26 fuzz-deadline flake twice, no failing input: counted as a flake"
				flakes=$((flakes + 1))
				break
			fi
			cat "$log"
			status=1
			break
		done
	done
done < <(grep -rlE --include='*_test.go' '^func Fuzz' . | grep -v '/\.' | sort)
echo "fuzz: $ran targets, $flakes deadline flakes, status $status"
exit $status
