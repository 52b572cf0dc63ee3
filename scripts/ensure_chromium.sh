#!/usr/bin/env bash
# Makes sure Debian's chromium is at /usr/bin/chromium for the browser tests (tests/test_browser.py): installs it
# with apt-get when it is missing and this runs as root. Otherwise it only says so; the tests then skip with the
# reason, or fail under CI=true. It never lets a tool download a browser of its own (no `playwright install`).
set -uo pipefail
chromium="${SANA_STREAM_CHROMIUM:-/usr/bin/chromium}"
[ -x "$chromium" ] && exit 0
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing Debian's chromium for the browser tests"
    export DEBIAN_FRONTEND=noninteractive
    if apt-get update -q && apt-get install -y -q chromium; then
        exit 0
    fi
    echo "setup: chromium could not be installed; the browser tests will be skipped (they fail under CI=true)" >&2
else
    echo "setup: $chromium is missing and this is not root with apt-get: the browser tests will be skipped" \
         "(they fail under CI=true); install it with 'sudo apt-get install chromium'" >&2
fi
exit 0
