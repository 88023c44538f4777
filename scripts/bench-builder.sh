#!/usr/bin/env bash
# Figures for the builder (issue 7), each against its peer in the same run:
#   build: one 256 MiB stick image with a 1,000-record setup.bin and the
#          default recipe's UEFI boot files (kernel, initramfs, systemd-boot),
#          by provstick's builder (Go benchmark, boot files prepared once as
#          on a factory line; with and without hashing the whole image)
#          vs truncate + sfdisk + mkfs.fat + mmd/mcopy on the same files.
#   write: that image to a file on disk (and to a loop device when root),
#          provstick write --no-verify vs dd bs=4M oflag=direct conv=fsync,
#          best of RUNS alternating runs; the verify pass timed separately.
# RUNS (default 3) and COUNT (Go benchmark -count, default 5) tune it.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${RUNS:-3}
count=${COUNT:-5}
for t in sfdisk mkfs.fat mcopy dd; do
	command -v "$t" >/dev/null || { echo "bench-builder: $t not found: run scripts/install-deps.sh" >&2; exit 1; }
done
# On disk, not tmpfs: dd's oflag=direct and our O_DIRECT need a real filesystem.
tmp=$(mktemp -d "${BENCH_DIR:-/var/tmp}/bench-builder.XXXXXX")
loop=
cleanup() {
	if [ -n "$loop" ]; then losetup --detach "$loop" || true; fi
	rm -rf "$tmp"
}
trap cleanup EXIT

echo "bench-builder: $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)"

# --- build ---
go test -run '^$' -bench 'BenchmarkBuild/syslinux=false|BenchmarkShellPipeline' -benchtime=5x -count "$count" ./builder >"$tmp/bench.txt"
median() { # benchmark-name-regex → median seconds
	grep -E "^$1-[0-9]+ " "$tmp/bench.txt" | awk '{print $3/1e9}' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'
}
ours_hash=$(median 'BenchmarkBuild/syslinux=false/hash=true')
ours_nohash=$(median 'BenchmarkBuild/syslinux=false/hash=false')
shell=$(median 'BenchmarkShellPipeline')
awk -v oh="$ours_hash" -v on="$ours_nohash" -v sh="$shell" -v c="$count" 'BEGIN {
	printf "build 256 MiB image, 1,000 records (median of %d x 5 builds)\n", c
	printf "  %-44s %8.3f s\n", "provstick builder (incl. SHA-256 of image)", oh
	printf "  %-44s %8.3f s\n", "provstick builder (no image hash)", on
	printf "  %-44s %8.3f s\n", "truncate+sfdisk+mkfs.fat+mcopy", sh
	printf "  ratio pipeline/provstick: %.1fx with hash, %.1fx without (target >= 2x)\n", sh / oh, sh / on
}'

# --- write ---
go build -o "$tmp/provstick" ./cmd/provstick

# A full 256 MiB of data, so that neither side can skip holes.
head -c $((256 << 20)) /dev/urandom >"$tmp/stick.img"
now() { date +%s.%N; }
best_ours=999 best_dd=999
for _ in $(seq "$runs"); do
	rm -f "$tmp/t.img"; sync
	s=$(now); "$tmp/provstick" write --yes --no-verify "$tmp/stick.img" "$tmp/t.img" >/dev/null 2>&1; e=$(now)
	best_ours=$(awk -v a="$best_ours" -v d="$(awk -v s="$s" -v e="$e" 'BEGIN{print e-s}')" 'BEGIN{print (d<a)?d:a}')
	rm -f "$tmp/t.img"; sync
	s=$(now); dd if="$tmp/stick.img" of="$tmp/t.img" bs=4M oflag=direct conv=fsync status=none; e=$(now)
	best_dd=$(awk -v a="$best_dd" -v d="$(awk -v s="$s" -v e="$e" 'BEGIN{print e-s}')" 'BEGIN{print (d<a)?d:a}')
done
verify=$("$tmp/provstick" write --yes "$tmp/stick.img" "$tmp/t.img" 2>/dev/null | sed -n 's/.*verified in \([0-9.]*\) s.*/\1/p')
awk -v o="$best_ours" -v d="$best_dd" -v v="$verify" -v r="$runs" 'BEGIN {
	printf "write 256 MiB to a file on disk (best of %d)\n", r
	printf "  %-44s %8.3f s %8.0f MiB/s\n", "provstick write --no-verify", o, 256 / o
	printf "  %-44s %8.3f s %8.0f MiB/s\n", "dd bs=4M oflag=direct conv=fsync", d, 256 / d
	printf "  provstick/dd throughput: %.0f%% (target >= 90%%); verify pass (O_DIRECT read + SHA-256): %s s\n", 100 * d / o, v
}'

if [ "$(id -u)" = 0 ] && command -v losetup >/dev/null; then
	truncate -s 300M "$tmp/backing.img"
	loop=$(losetup --find --show "$tmp/backing.img")
	best_ours=999 best_dd=999
	for _ in $(seq "$runs"); do
		s=$(now); "$tmp/provstick" write --yes --no-verify "$tmp/stick.img" "$loop" >/dev/null 2>&1; e=$(now)
		best_ours=$(awk -v a="$best_ours" -v d="$(awk -v s="$s" -v e="$e" 'BEGIN{print e-s}')" 'BEGIN{print (d<a)?d:a}')
		s=$(now); dd if="$tmp/stick.img" of="$loop" bs=4M oflag=direct conv=fsync status=none; e=$(now)
		best_dd=$(awk -v a="$best_dd" -v d="$(awk -v s="$s" -v e="$e" 'BEGIN{print e-s}')" 'BEGIN{print (d<a)?d:a}')
	done
	verify=$("$tmp/provstick" write --yes "$tmp/stick.img" "$loop" 2>/dev/null | sed -n 's/.*verified in \([0-9.]*\) s.*/\1/p')
	awk -v o="$best_ours" -v d="$best_dd" -v v="$verify" -v r="$runs" -v l="$loop" 'BEGIN {
		printf "write 256 MiB to loop device %s (best of %d)\n", l, r
		printf "  %-44s %8.3f s %8.0f MiB/s\n", "provstick write --no-verify", o, 256 / o
		printf "  %-44s %8.3f s %8.0f MiB/s\n", "dd bs=4M oflag=direct conv=fsync", d, 256 / d
		printf "  provstick/dd throughput: %.0f%% (target >= 90%%); verify pass: %s s\n", 100 * d / o, v
	}'
else
	echo "write to a loop device: skipped (needs root)"
fi
