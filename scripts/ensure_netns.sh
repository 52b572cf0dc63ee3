#!/usr/bin/env bash
# Makes sure `ip` (iproute2) and `iptables` are installed for the NAT tests (tests/test_nat.py, which build their own
# network namespaces, NAT routers and simulated internet, and remove them afterwards): installs them with apt-get when
# they are missing and this runs as root. Otherwise it only says so; the tests then skip with the reason, or fail
# under CI=true.
set -uo pipefail
missing=()
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
command -v iptables >/dev/null 2>&1 || missing+=(iptables)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing ${missing[*]} for the NAT tests"
    export DEBIAN_FRONTEND=noninteractive
    if apt-get update -q && apt-get install -y -q --no-install-recommends "${missing[@]}"; then
        exit 0
    fi
    echo "setup: ${missing[*]} could not be installed; the NAT tests will be skipped (they fail under CI=true)" >&2
else
    echo "setup: ${missing[*]} missing and this is not root with apt-get: the NAT tests will be skipped" \
         "(they fail under CI=true); install them with 'sudo apt-get install ${missing[*]}'" >&2
fi
exit 0
