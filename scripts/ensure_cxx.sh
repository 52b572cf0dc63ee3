#!/usr/bin/env bash
# Makes sure a C++ compiler is installed for the torch-compile tests (tests/test_torch_compile.py,
# tests/test_device_check.py): on a CPU, Inductor compiles the code it generates with g++. Installs Debian's g++
# with apt-get when it is missing and this runs as root. Otherwise it only says so; the tests then skip with the
# reason, or fail under CI=true.
set -uo pipefail
cxx="${CXX:-g++}"
command -v "$cxx" >/dev/null 2>&1 && exit 0
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing Debian's g++ for the torch-compile tests"
    export DEBIAN_FRONTEND=noninteractive
    if apt-get update -q && apt-get install -y -q --no-install-recommends g++; then
        exit 0
    fi
    echo "setup: g++ could not be installed; the torch-compile tests will be skipped (they fail under CI=true)" >&2
else
    echo "setup: $cxx is missing and this is not root with apt-get: the torch-compile tests will be skipped" \
         "(they fail under CI=true); install it with 'sudo apt-get install g++'" >&2
fi
exit 0
