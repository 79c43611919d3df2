#!/usr/bin/env bash
# Installs what pywg, its demo and its tests need on Debian 12 (run as root).
set -euo pipefail
cd "$(dirname "$0")/.."

# gcc, libc6-dev and libssl-dev build the C hot path (pywg/_hotpath, linked to libcrypto).
apt_packages=(wireguard-tools wireguard-go iproute2 iputils-ping iperf3 gcc libc6-dev libssl-dev)
# tests/test_podman.py: podman 4.3 with its CNI backend runs a busybox-static root filesystem. runc too:
# podman pulls in crun, which refuses hybrid cgroup hosts ("cgroups in hybrid mode not supported").
apt_packages+=(podman containernetworking-plugins busybox-static runc)
# tests/test_kernel_mode.py boots Debian's kernel (which has the WireGuard module) under QEMU's software
# emulation, with busybox-static in its initramfs.
apt_packages+=(qemu-system-x86)
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

# ... and that kernel is extracted into VM_CACHE/<version> rather than installed: installing it would
# run its hooks (initramfs, boot loader) and put a kernel this machine does not run into /boot.
VM_CACHE=${PYWG_VM_CACHE:-/var/cache/pywg-vm}
kernel_package() {
    apt-cache depends linux-image-amd64 2>/dev/null | sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*\)$/\1/p' | head -n 1
}
package=$(kernel_package)
if [ -z "$package" ]; then
    apt-get update -qq
    package=$(kernel_package)
fi
if [ -z "$package" ]; then
    echo "install-deps.sh: apt knows no linux-image-amd64 (needed by tests/test_kernel_mode.py)" >&2
    exit 1
fi
version=${package#linux-image-}
if [ ! -f "$VM_CACHE/$version/vmlinuz" ]; then
    mkdir -p "$VM_CACHE"
    find "$VM_CACHE" -mindepth 1 -maxdepth 1 -exec rm -rf {} +  # older kernels, interrupted downloads
    work=$(mktemp -d "$VM_CACHE/.download.XXXXXX")  # beside the result, so the last step is a rename
    (cd "$work" && apt-get download -qq -o APT::Sandbox::User=root "$package")
    dpkg-deb -x "$work/$package"_*.deb "$work/root"
    mkdir -p "$work/kernel/lib/modules"
    mv "$work/root/boot/vmlinuz-$version" "$work/kernel/vmlinuz"
    mv "$work/root/lib/modules/$version" "$work/kernel/lib/modules/"
    mv "$work/kernel" "$VM_CACHE/$version"
    rm -rf "$work"
fi

python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore -e '.[test]'
