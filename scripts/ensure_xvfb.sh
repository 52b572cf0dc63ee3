#!/usr/bin/env bash
# Makes sure Debian's Xvfb and the real X clients of the capture tests are installed (tests/test_bridge_x11.py:
# Xvfb, xdotool, xclock from x11-apps, Tk windows drawn by /usr/bin/python3 with python3-tk, twm as a reparenting
# window manager; libgl1 and
# libglib2.0-0 for the GUI OpenCV below): installs what is missing with apt-get when this runs as root. Otherwise
# it only says so; the tests then skip with the reason, or fail under CI=true. Also puts a GUI OpenCV
# (opencv-python, the version of the headless one in .venv) into .venv-gui-cv2/ for the one --preview window
# test, which skips without it.
set -uo pipefail
packages=(xvfb xdotool x11-apps python3-tk twm libgl1 libglib2.0-0)
missing=()
for package in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "setup: installing ${missing[*]} for the X11 capture tests"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -q && apt-get install -y -q --no-install-recommends "${missing[@]}" ||
            echo "setup: ${missing[*]} could not be installed; the X11 capture tests will be skipped (they fail" \
                 "under CI=true)" >&2
    else
        echo "setup: ${missing[*]} missing and this is not root with apt-get: the X11 capture tests will be" \
             "skipped (they fail under CI=true); install them with 'sudo apt-get install ${missing[*]}'" >&2
    fi
fi
gui=.venv-gui-cv2
[ -d "$gui/cv2" ] && exit 0
version=$(.venv/bin/python -c "import importlib.metadata as m; print(m.version('opencv-python-headless'))" 2>/dev/null)
if [ -n "$version" ]; then
    echo "setup: opencv-python $version (with a GUI) into $gui/ for the --preview window test"
    .venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps --target "$gui" \
        "opencv-python==$version" || echo "setup: opencv-python could not be installed; the --preview window" \
                                          "test will be skipped" >&2
fi
exit 0
