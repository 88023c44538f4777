#!/bin/sh
# provstick postrm: forget the unit. The pool in /var/lib/provstick and the
# provstick user are kept (the pool holds secrets and history a site must
# not lose by removing a package); delete them by hand if you mean it.
set -e
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload >/dev/null 2>&1 || true
fi
exit 0
