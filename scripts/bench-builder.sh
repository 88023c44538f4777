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
# Write: provstick write --no-verify: one process, O_DIRECT, 4 MiB buffers,
# one write outstanding on a block device and four on a file, fallocate of a
# file target, fsync at the end; dd: 4 MiB reads and O_DIRECT writes one at a
# time, fsync at the end. Both write every byte (the image is random data, no
# holes to skip). Two measures from the same alternating runs:
#  - throughput as each tool reports it: dd's own summary ("copied, X s",
#    from its first read to the end of conv=fsync) against provstick's "ok …
#    in X s" (from opening the target to the end of its fsync);
#  - whole processes timed from outside, so provstick's start-up (a large
#    static binary: the kiosk, store and web console come with it) counts
#    too; the start-up alone is printed.
# provstick is built as the release is (CGO_ENABLED=0, static).

# --- build ---
# provstick: Builder.Build of one stick (boot files prepared once, as on a
# factory line): go-diskfs MBR + FAT32, setup.bin first, kernel, initramfs,
# systemd-boot, manifest; the image is renamed into place. Three variants:
# as "provstick build" does it (fsync of image and directory, SHA-256 of the
# whole 256 MiB image), without the image hash, and without hash and fsync.
# Pipeline: truncate, sfdisk, mkfs.fat -F 32, mmd and one mcopy per file
# (setup.bin first) on the same files; no fsync, no hash.
go test -run '^$' -bench 'BenchmarkBuild/syslinux=false|BenchmarkShellPipeline' -benchtime=5x -count "$count" ./builder >"$tmp/bench.txt"
median() { # benchmark-name-regex → median seconds
	grep -E "^$1-[0-9]+ " "$tmp/bench.txt" | awk '{print $3/1e9}' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'
}
ours_full=$(median 'BenchmarkBuild/syslinux=false/hash=true/fsync=true')
ours_nohash=$(median 'BenchmarkBuild/syslinux=false/hash=false/fsync=true')
ours_bare=$(median 'BenchmarkBuild/syslinux=false/hash=false/fsync=false')
shell=$(median 'BenchmarkShellPipeline')
awk -v of="$ours_full" -v on="$ours_nohash" -v ob="$ours_bare" -v sh="$shell" -v c="$count" 'BEGIN {
	printf "build 256 MiB image, 1,000 records (median of %d x 5 builds)\n", c
	printf "  %-52s %8.3f s  %.2fx pipeline\n", "provstick builder, fsync + SHA-256 of image", of, of / sh
	printf "  %-52s %8.3f s  %.2fx pipeline\n", "provstick builder, fsync, no image hash", on, on / sh
	printf "  %-52s %8.3f s  %.2fx pipeline\n", "provstick builder, no fsync, no hash (like pipeline)", ob, ob / sh
	printf "  %-52s %8.3f s\n", "truncate+sfdisk+mkfs.fat+mmd+mcopy (no fsync/hash)", sh
	printf "  target: provstick <= 0.5x the pipeline on equal terms (no fsync, no hash)\n"
}'
. scripts/bench-lib.sh
figure "build 256 MiB, 1,000 records, no fsync/hash (as the pipeline)" "$ours_bare" "truncate+sfdisk+mkfs.fat+mcopy" "$shell" s lower "≤ 0.5× the pipeline"
figure "build as provstick build does (fsync + image SHA-256)" "$ours_full" "truncate+sfdisk+mkfs.fat+mcopy (no fsync/hash)" "$shell" s lower

# --- write ---
CGO_ENABLED=0 go build -trimpath -o "$tmp/provstick" ./cmd/provstick

# A full 256 MiB of data, so that neither side can skip holes.
head -c $((256 << 20)) /dev/urandom >"$tmp/stick.img"
now() { date +%s.%N; }
elapsed() { awk -v s="$1" -v e="$2" 'BEGIN{printf "%.4f\n", e-s}'; }
stats() { # file of seconds → "best median"
	sort -g "$1" | awk '{a[NR]=$1} END {print a[1], a[int((NR+1)/2)]}'
}
startup=()
for _ in 1 2 3; do s=$(now); "$tmp/provstick" write --help >/dev/null; e=$(now); startup+=("$(elapsed "$s" "$e")"); done
startup=$(printf '%s\n' "${startup[@]}" | sort -g | head -1)

# compare_write TARGET LABEL [prepare-command]: alternating runs.
compare_write() {
	local target=$1 label=$2 s e
	: >"$tmp/ours.txt"; : >"$tmp/dd.txt"; : >"$tmp/ours-self.txt"; : >"$tmp/dd-self.txt"
	for _ in $(seq "$runs"); do
		[ -b "$target" ] || rm -f "$target"; sync
		s=$(now); "$tmp/provstick" write --yes --no-verify --force "$tmp/stick.img" "$target" >"$tmp/ours.out" 2>/dev/null; e=$(now)
		elapsed "$s" "$e" >>"$tmp/ours.txt"
		sed -n 's/^ok .*: [0-9]* MiB in \([0-9.]*\) s .*/\1/p' "$tmp/ours.out" >>"$tmp/ours-self.txt"
		[ -b "$target" ] || rm -f "$target"; sync
		s=$(now); dd if="$tmp/stick.img" of="$target" bs=4M oflag=direct conv=fsync 2>"$tmp/dd.out"; e=$(now)
		elapsed "$s" "$e" >>"$tmp/dd.txt"
		sed -n 's/.* copied, \([0-9.]*\) s,.*/\1/p' "$tmp/dd.out" >>"$tmp/dd-self.txt"
	done
	[ "$(wc -l <"$tmp/ours-self.txt")" = "$runs" ] || { echo "bench-builder: provstick write printed no time: $(cat "$tmp/ours.out")" >&2; exit 1; }
	[ "$(wc -l <"$tmp/dd-self.txt")" = "$runs" ] || { echo "bench-builder: dd printed no time: $(cat "$tmp/dd.out")" >&2; exit 1; }
	verify=$("$tmp/provstick" write --yes --force "$tmp/stick.img" "$target" 2>/dev/null | sed -n 's/.*verified in \([0-9.]*\) s.*/\1/p')
	read -r ob om <<<"$(stats "$tmp/ours.txt")"
	read -r db dm <<<"$(stats "$tmp/dd.txt")"
	read -r osb osm <<<"$(stats "$tmp/ours-self.txt")"
	read -r dsb dsm <<<"$(stats "$tmp/dd-self.txt")"
	awk -v ob="$ob" -v om="$om" -v db="$db" -v dm="$dm" -v osb="$osb" -v osm="$osm" -v dsb="$dsb" -v dsm="$dsm" -v v="$verify" -v r="$runs" -v l="$label" -v su="$startup" 'BEGIN {
		printf "write 256 MiB to %s (%d alternating runs; best / median)\n", l, r
		printf "  throughput as each tool reports it (open/first read to the end of fsync):\n"
		printf "  %-44s %7.3f s %5.0f MiB/s / %7.3f s %5.0f MiB/s\n", "provstick write --no-verify", osb, 256 / osb, osm, 256 / osm
		printf "  %-44s %7.3f s %5.0f MiB/s / %7.3f s %5.0f MiB/s\n", "dd bs=4M oflag=direct conv=fsync", dsb, 256 / dsb, dsm, 256 / dsm
		printf "  provstick/dd throughput: %.0f%% best, %.0f%% median (target >= 90%%)\n", 100 * dsb / osb, 100 * dsm / osm
		printf "  whole processes, timed from outside:\n"
		printf "  %-44s %7.3f s %5.0f MiB/s / %7.3f s %5.0f MiB/s\n", "provstick write --no-verify", ob, 256 / ob, om, 256 / om
		printf "  %-44s %7.3f s %5.0f MiB/s / %7.3f s %5.0f MiB/s\n", "dd bs=4M oflag=direct conv=fsync", db, 256 / db, dm, 256 / dm
		printf "  provstick/dd: %.0f%% best, %.0f%% median\n", 100 * db / ob, 100 * dm / om
		printf "  (provstick start-up alone, write --help: %.3f s; verify pass, O_DIRECT read + SHA-256: %s s)\n", su, v
	}'
	figure "provstick write to $label, throughput as reported (median)" "$osm" "dd bs=4M oflag=direct conv=fsync, as reported" "$dsm" s lower "≥ 90% of dd's throughput"
	figure "provstick write to $label, whole process (median)" "$om" "dd bs=4M oflag=direct conv=fsync" "$dm" s lower
}

compare_write "$tmp/t.img" "a file on disk"

# The same comparison without provstick's process start-up: builder.Write
# called in a Go benchmark, dd exec'd from it (loop device only as root).
go test -run '^$' -bench 'BenchmarkWrite/' -benchtime=4x -count "$count" ./builder >"$tmp/wbench.txt"
for t in file loop; do
	grep -q "^BenchmarkWrite/$t/" "$tmp/wbench.txt" || continue
	o=$(grep -E "^BenchmarkWrite/$t/provstick-[0-9]+ " "$tmp/wbench.txt" | awk '{print $3/1e9}' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
	d=$(grep -E "^BenchmarkWrite/$t/dd-[0-9]+ " "$tmp/wbench.txt" | awk '{print $3/1e9}' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
	awk -v o="$o" -v d="$d" -v t="$t" -v c="$count" 'BEGIN {
		printf "write 256 MiB to %s, in-process Write vs dd (median of %d x 4)\n", t, c
		printf "  %-44s %7.3f s %5.0f MiB/s\n", "builder.Write (no verify)", o, 256 / o
		printf "  %-44s %7.3f s %5.0f MiB/s\n", "dd bs=4M oflag=direct conv=fsync", d, 256 / d
		printf "  provstick/dd throughput: %.0f%% (target >= 90%%)\n", 100 * d / o
	}'
	figure "builder.Write to $t, in-process (median)" "$o" "dd bs=4M oflag=direct conv=fsync" "$d" s lower "≥ 90% of dd's throughput"
done

if [ "$(id -u)" = 0 ] && command -v losetup >/dev/null; then
	truncate -s 300M "$tmp/backing.img"
	loop=$(losetup --find --show "$tmp/backing.img")
	compare_write "$loop" "loop device $loop"
else
	echo "write to a loop device: skipped (needs root)"
fi
