#!/usr/bin/env bash
# Makes sure Debian's GStreamer and its Python bindings are installed for the GStreamer WHIP sender test
# (tests/test_whip_gstreamer.py, run by /usr/bin/python3): installs what is missing with apt-get when this runs as
# root. Otherwise it only says so; the test then skips with the reason, or fails under CI=true.
set -uo pipefail
packages=(python3-gi gir1.2-gstreamer-1.0 gir1.2-gst-plugins-base-1.0 gir1.2-gst-plugins-bad-1.0 gir1.2-nice-0.1
          gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly
          gstreamer1.0-nice)
missing=()
for package in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing ${missing[*]} for the GStreamer WHIP test"
    export DEBIAN_FRONTEND=noninteractive
    if apt-get update -q && apt-get install -y -q --no-install-recommends "${missing[@]}"; then
        exit 0
    fi
    echo "setup: ${missing[*]} could not be installed; the GStreamer WHIP test will be skipped (it fails under" \
         "CI=true)" >&2
else
    echo "setup: ${missing[*]} missing and this is not root with apt-get: the GStreamer WHIP test will be skipped" \
         "(it fails under CI=true); install them with 'sudo apt-get install ${missing[*]}'" >&2
fi
exit 0
