#!/usr/bin/env bash
# Runs every fuzz target of the module for a bounded time each
# (default 5s; first argument overrides). Crashers land under the package's
# testdata/fuzz/<Target>/ and then replay in plain `go test`.
set -euo pipefail
fuzztime=${1:-5s}
cd "$(dirname "$0")/.."
status=0
while IFS= read -r file; do
	dir=$(dirname "$file")
	dir=${dir#./}
	for target in $(grep -oE '^func (Fuzz[A-Za-z0-9_]+)\(' "$file" | sed -E 's/^func (Fuzz[A-Za-z0-9_]+)\(/\1/'); do
		echo "fuzz: ./$dir $target ($fuzztime)"
		if ! go test -run='^$' -fuzz="^${target}\$" -fuzztime="$fuzztime" "./$dir" >"/tmp/fuzz-$$.log" 2>&1; then
			cat "/tmp/fuzz-$$.log"
			status=1
		fi
	done
done < <(grep -rlE --include='*_test.go' '^func Fuzz' . | grep -v '/\.' | sort)
rm -f "/tmp/fuzz-$$.log"
exit $status
