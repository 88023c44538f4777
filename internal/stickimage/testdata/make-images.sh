#!/usr/bin/env bash
# Makes the golden stick images with tools we did not write (sfdisk,
# mkfs.fat, mtools) from setupbin/testdata/v2.1.bin. Images are 40 MiB,
# mostly zeros, stored gzip-compressed. Run from this directory.
set -euo pipefail
sb=../../../setupbin/testdata/v2.1.bin
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
mk() { # name table
  local img=$tmp/$1.img
  truncate -s 40M "$img"
  if [[ $2 == gpt ]]; then
    printf 'label: gpt\nstart=2048, type=EBD0A0A2-B9E5-4433-87C0-68B6B72699C7\n' | sfdisk -q "$img"
  else
    printf 'label: dos\nstart=2048, type=c, bootable\n' | sfdisk -q "$img"
  fi
  mkfs.fat -F 32 -n PROVSTICK -i 12345678 --offset 2048 "$img" >/dev/null
  echo "$img"
}
# 1. setup.bin first and contiguous (MBR).
img=$(mk mbr-first mbr); mcopy -i "$img@@1M" "$sb" ::SETUP.BIN
gzip -9n <"$img" >mbr-first.img.gz
# 2. GPT.
img=$(mk gpt-first gpt); mcopy -i "$img@@1M" "$sb" ::SETUP.BIN
gzip -9n <"$img" >gpt-first.img.gz
# 3. setup.bin second in the root, still contiguous.
img=$(mk mbr-second mbr); echo hello >"$tmp/readme.txt"; mcopy -i "$img@@1M" "$tmp/readme.txt" ::README.TXT; mcopy -i "$img@@1M" "$sb" ::SETUP.BIN
gzip -9n <"$img" >mbr-second.img.gz
# 4. Fragmented: two small files, the first deleted, then setup.bin fills
#    the hole and continues after the second.
img=$(mk mbr-fragmented mbr)
head -c 512 /dev/zero >"$tmp/a"; mcopy -i "$img@@1M" "$tmp/a" ::A.BIN; mcopy -i "$img@@1M" "$tmp/a" ::B.BIN
mdel -i "$img@@1M" ::A.BIN
# Forget the FSInfo next-free hint (0x1EC of the partition's sector 1) so
# that mtools allocates from the start, into the hole A.BIN left.
printf '\xff\xff\xff\xff' | dd of="$img" bs=1 seek=$((1048576 + 512 + 0x1EC)) conv=notrunc status=none
mcopy -i "$img@@1M" "$sb" ::SETUP.BIN
gzip -9n <"$img" >mbr-fragmented.img.gz
# 5. No setup.bin.
img=$(mk mbr-empty mbr); gzip -9n <"$img" >mbr-empty.img.gz
