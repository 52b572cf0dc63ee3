#!/usr/bin/env bash
# Makes sure Debian's coturn (`turnserver`) is installed for the TURN tests (tests/test_turn.py,
# tests/test_turn_browser.py, which start their own instances on loopback ports): installs it with apt-get when it
# is missing and this runs as root. Otherwise it only says so; the tests then skip with the reason, or fail under
# CI=true. The tests never use the package's own service (if one runs, on port 3478): their instances take free
# ports.
set -uo pipefail
turnserver="${SANA_STREAM_TURNSERVER:-turnserver}"
command -v "$turnserver" >/dev/null 2>&1 && exit 0
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing Debian's coturn for the TURN tests"
    export DEBIAN_FRONTEND=noninteractive
    if apt-get update -q && apt-get install -y -q --no-install-recommends coturn; then
        exit 0
    fi
    echo "setup: coturn could not be installed; the TURN tests will be skipped (they fail under CI=true)" >&2
else
    echo "setup: $turnserver is missing and this is not root with apt-get: the TURN tests will be skipped" \
         "(they fail under CI=true); install it with 'sudo apt-get install coturn'" >&2
fi
exit 0
