#!/usr/bin/env bash
# Installs every system package and tool provstick's build, demo and tests
# need on Debian (12 or later). Idempotent: installs only what is missing.
#   scripts/install-deps.sh          install what is missing
#   scripts/install-deps.sh --check  exit 1 if anything is missing, change nothing
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages: command or file that proves each is there.
declare -A APT=(
	[make]=/usr/bin/make
	[git]=/usr/bin/git
	[openssl]=/usr/bin/openssl          # TLS-PSK interop peer
	[xxd]=/usr/bin/xxd
	[postgresql]=/usr/lib/postgresql    # store tests start a throwaway cluster
	[ca-certificates]=/etc/ssl/certs
	[qemu-system-x86]=/usr/bin/qemu-system-x86_64   # VM tests boot the Debian kernel (TCG or KVM)
	[seabios]=/usr/share/seabios/bios-256k.bin        # legacy BIOS boot tests
	[ovmf]=/usr/share/OVMF/OVMF_CODE_4M.fd            # UEFI boot tests
	[mtools]=/usr/bin/mcopy                           # independent reader of built images
	[dosfstools]=/usr/sbin/fsck.fat
	[fdisk]=/usr/sbin/sfdisk
	[syslinux]=/usr/bin/syslinux                      # legacy BIOS loader installed into images
	[syslinux-common]=/usr/lib/syslinux/mbr/mbr.bin
	[systemd-boot-efi]=/usr/lib/systemd/boot/efi/systemd-bootx64.efi  # UEFI loader
	[swtpm]=/usr/bin/swtpm                            # the TPM the agent reads in tests
	[swtpm-tools]=/usr/bin/swtpm_setup
	[chromium]=/usr/bin/chromium                      # web console browser tests (headless)
	[shim-signed]=/usr/lib/shim/shimx64.efi.signed          # Secure Boot recipe: Microsoft-signed shim
	[grub-efi-amd64-signed]=/usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed  # and Debian-signed grub
	[iproute2]=/usr/sbin/ip                            # kiosk discovery test in network namespaces
	[tesseract-ocr]=/usr/bin/tesseract                 # reads the technician screen off QEMU screenshots
	[zbar-tools]=/usr/bin/zbarimg                       # reads the agent's QR code off QEMU screenshots
	[systemd]=/usr/bin/systemd-analyze                  # the package test verifies the kiosk unit
	[man-db]=/usr/bin/man
)
STATICCHECK_VERSION=v0.8.2                 # staticcheck 2026.2.2, knows Go 1.26
MESHCENTRAL_VERSION=1.1.55                 # peer for setup.bin interop tests
MESHCENTRAL_DIR=.cache/meshcentral/$MESHCENTRAL_VERSION
# The Debian kernel the VM tests boot: the package linux-image-amd64 points
# at, unpacked (not installed) into the user's cache.
KERNEL_DIR=${VMTEST_KERNEL_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/provstick/vm-kernel}

check=0
[ "${1:-}" = "--check" ] && check=1
missing=()
for pkg in "${!APT[@]}"; do
	[ -e "${APT[$pkg]}" ] || missing+=("$pkg")
done
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
gobin=$(go env GOPATH)/bin
need_staticcheck=0
"$gobin/staticcheck" -version 2>/dev/null | grep -q "(${STATICCHECK_VERSION#v})" || need_staticcheck=1
need_mc=0
[ -f "$MESHCENTRAL_DIR/amt/amt-setupbin.js" ] || need_mc=1
need_kernel=0
compgen -G "$KERNEL_DIR/boot/vmlinuz-*" >/dev/null || need_kernel=1

if [ $check = 1 ]; then
	[ ${#missing[@]} = 0 ] && [ $need_staticcheck = 0 ] && [ $need_mc = 0 ] && [ $need_kernel = 0 ] && exit 0
	echo "missing: ${missing[*]} $( [ $need_staticcheck = 1 ] && echo staticcheck) $( [ $need_mc = 1 ] && echo meshcentral) $( [ $need_kernel = 1 ] && echo debian-kernel)"
	exit 1
fi

if [ ${#missing[@]} -gt 0 ]; then
	echo "install-deps: installing ${missing[*]}"
	sudo=""
	[ "$(id -u)" = 0 ] || sudo=sudo
	$sudo apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
if [ $need_staticcheck = 1 ]; then
	echo "install-deps: installing staticcheck $STATICCHECK_VERSION"
	go install "honnef.co/go/tools/cmd/staticcheck@$STATICCHECK_VERSION"
fi
if [ $need_mc = 1 ]; then
	# Only MeshCentral's amt/ files are used, so fetch the package tarball
	# with npm and unpack that folder rather than installing its dependencies.
	echo "install-deps: fetching meshcentral@$MESHCENTRAL_VERSION (amt/ only)"
	tmp=$(mktemp -d)
	trap 'rm -rf "$tmp"' EXIT
	(cd "$tmp" && npm pack --silent "meshcentral@$MESHCENTRAL_VERSION" >/dev/null)
	mkdir -p "$MESHCENTRAL_DIR"
	tar -xzf "$tmp"/meshcentral-*.tgz -C "$MESHCENTRAL_DIR" --strip-components=1 package/amt package/package.json package/LICENSE
fi
if [ $need_kernel = 1 ]; then
	sudo=""
	[ "$(id -u)" = 0 ] || sudo=sudo
	pkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
	if [ -z "$pkg" ]; then
		$sudo apt-get update -qq
		pkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
	fi
	echo "install-deps: fetching the Debian kernel $pkg into $KERNEL_DIR"
	ktmp=$(mktemp -d)
	chmod 755 "$ktmp" # apt-get download drops privileges to _apt
	(cd "$ktmp" && apt-get download -qq "$pkg")
	mkdir -p "$KERNEL_DIR"
	dpkg-deb -x "$ktmp"/*.deb "$KERNEL_DIR"
	rm -rf "$ktmp"
fi
echo "install-deps: everything is installed"
