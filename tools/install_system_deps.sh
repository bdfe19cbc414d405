#!/usr/bin/env bash
# Install what the test suite needs beyond the Rust toolchain and Python, only when missing:
# Debian's chromium and chromedriver (page tests), postgresql and nginx (the clustered backends
# and `make cluster-test`), and the Garage S3 server from crates.io (a release build of about
# seven minutes on two cores, once per machine; it lands in ~/.cargo/bin).
set -euo pipefail
need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
if ! command -v initdb >/dev/null 2>&1 && ! compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; then
    need+=(postgresql)
fi
command -v nginx >/dev/null 2>&1 || [[ -x /usr/sbin/nginx ]] || need+=(nginx)
if ((${#need[@]})); then
    if [[ $(id -u) -ne 0 ]]; then
        echo "install_system_deps: need root to apt-get install ${need[*]}" >&2
        exit 1
    fi
    echo "install_system_deps: apt-get install ${need[*]}"
    apt-get update -qq
    # Packages whose services would start on install (postgresql, nginx) are not started: the
    # tests run their own throwaway servers.
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
        chmod +x /usr/sbin/policy-rc.d
        trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
echo "install_system_deps: chromium, chromedriver, postgresql and nginx present"

GARAGE_VERSION=2.5.0
if ! command -v garage >/dev/null 2>&1 && [[ ! -x "$HOME/.cargo/bin/garage" ]]; then
    echo "install_system_deps: cargo install garage $GARAGE_VERSION (release build, several minutes)"
    start=$SECONDS
    cargo install garage --version "$GARAGE_VERSION" --locked --quiet
    echo "install_system_deps: garage installed in $((SECONDS - start)) s"
fi
echo "install_system_deps: garage present"
