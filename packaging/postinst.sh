#!/bin/sh
# provstick postinst: create the provstick user and its state directory, and
# reload systemd. The kiosk is not enabled: it needs /etc/provstick/passphrase
# and a reviewed configuration first (see
# /usr/lib/systemd/system/provstick-kiosk.service).
set -e
if [ "$1" = "configure" ]; then
	if command -v systemd-sysusers >/dev/null 2>&1; then
		systemd-sysusers provstick.conf
	elif ! getent passwd provstick >/dev/null; then
		adduser --system --group --home /var/lib/provstick --no-create-home provstick
	fi
	if command -v systemd-tmpfiles >/dev/null 2>&1; then
		systemd-tmpfiles --create provstick.conf || true
	else
		install -d -m 0700 -o provstick -g provstick /var/lib/provstick
	fi
	if [ -d /run/systemd/system ]; then
		systemctl daemon-reload >/dev/null 2>&1 || true
		# Restart a kiosk that was running before the upgrade.
		if systemctl is-active --quiet provstick-kiosk.service; then
			systemctl try-restart provstick-kiosk.service || true
		fi
	fi
fi
exit 0
