#!/usr/bin/env bash
# Compiles the request paths with mypyc (setup.py lists the modules), in place, then
# touches the stamp file given as $1. Needs a C compiler and the Python headers: as root
# on Debian it installs the missing ones; otherwise it says in one line what is missing,
# and the pure build, which needs neither, runs.
set -euo pipefail
stamp="$1"
python="${PYTHON:-python3}"
include="$("$python" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
version="$("$python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"

missing=()
command -v cc >/dev/null 2>&1 || missing+=(gcc)
# Debian's own interpreter keeps its headers in a package of their own.
[[ -e "$include/Python.h" ]] || missing+=("python$version-dev")
if ((${#missing[@]})); then
    if [[ $EUID -eq 0 ]] && command -v apt-get >/dev/null 2>&1 \
        && [[ "$include" == /usr/include/* || " ${missing[*]} " != *-dev* ]]; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
    else
        echo "pure Python build: the compiled one needs ${missing[*]} (see README, \"Builds\")" >&2
        exit 0
    fi
fi

find src -name '*.so' -delete
PUSHUP_COMPILE=1 "$python" setup.py --quiet build_ext --inplace 2>&1 \
    | grep -v 'warning: Treating generator comprehension as list' || true
# build_ext keeps the times of the files it copies, and mypyc leaves a module's small
# shim unchanged when only the shared library changed: date them all to this build.
find src -name '*.so' -exec touch {} +
"$python" -c 'import sys, pushup.build as b; sys.exit(0 if b.compiled() else 1)' \
    || { echo "the compiled build failed (see above)" >&2; exit 1; }
touch "$stamp"
