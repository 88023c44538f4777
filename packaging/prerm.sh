#!/bin/sh
# provstick prerm: stop the kiosk before its binary goes away.
set -e
if [ "$1" = "remove" ] && [ -d /run/systemd/system ]; then
	systemctl stop provstick-kiosk.service >/dev/null 2>&1 || true
fi
exit 0
