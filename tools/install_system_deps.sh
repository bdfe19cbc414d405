#!/usr/bin/env bash
# Install the Debian packages the test suite needs, only when they are missing.
set -euo pipefail
need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
if ((${#need[@]})); then
    if [[ $(id -u) -ne 0 ]]; then
        echo "install_system_deps: need root to apt-get install ${need[*]}" >&2
        exit 1
    fi
    echo "install_system_deps: apt-get install ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
echo "install_system_deps: chromium and chromedriver present"
