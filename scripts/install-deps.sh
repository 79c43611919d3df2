#!/usr/bin/env bash
# Installs what pywg, its demo and its tests need on Debian 12 (run as root).
set -euo pipefail
cd "$(dirname "$0")/.."

# gcc, libc6-dev and libssl-dev build the C hot path (pywg/_hotpath, linked to libcrypto).
apt_packages=(wireguard-tools wireguard-go iproute2 iputils-ping iperf3 gcc libc6-dev libssl-dev)
# tests/test_podman.py: podman 4.3 with its CNI backend runs a busybox-static root filesystem. runc too:
# podman pulls in crun, which refuses hybrid cgroup hosts ("cgroups in hybrid mode not supported").
apt_packages+=(podman containernetworking-plugins busybox-static runc)
# ... and the Python headers: a python3 from Debian needs python3-dev (pyenv's ships its own).
python3 -c 'import os, sysconfig; os.stat(os.path.join(sysconfig.get_paths()["include"], "Python.h"))' \
    2>/dev/null || apt_packages+=(python3-dev)
missing=()
for package in "${apt_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore -e '.[test]'
