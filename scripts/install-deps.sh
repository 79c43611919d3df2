#!/usr/bin/env bash
# Installs on Debian 12 (as root) what one use of pywg needs, saying in one line what each step does:
#   scripts/install-deps.sh demo   `make demo` (and bench, soak): the tools of a tunnel between two
#                                  namespaces, the C hot path's build, pywg itself
#   scripts/install-deps.sh test   `make test`: all that, and what the tests need besides (podman, QEMU
#                                  with Debian's kernel, stress-ng, containerd, mmdebstrap, kubectl 1.20,
#                                  the test packages)
# The tools' own output goes to a log, shown only when a step fails.
set -euo pipefail
cd "$(dirname "$0")/.."

purpose=${1:-test}
case $purpose in
demo | test) ;;
*)
    echo "usage: $0 demo|test" >&2
    exit 2
    ;;
esac
what=$([ "$purpose" = demo ] && echo "the demo needs" || echo "the tests need")

log=$(mktemp /tmp/pywg-install-deps.XXXXXX)
trap 'rm -f "$log"' EXIT

say() { echo "install-deps: $*"; }

# step DESCRIPTION COMMAND...: one line saying what runs, then the command with its output in the log.
step() {
    say "$1"
    shift
    if ! "$@" >>"$log" 2>&1; then
        echo "install-deps: that failed; the end of its output:" >&2
        tail -n 30 "$log" >&2
        exit 1
    fi
}

# The demo: ip, ping, wg, wireguard-go and iperf3 (pywg/runtime/demo.py); gcc, libc6-dev and libssl-dev
# build the C hot path (pywg.native._hotpath, linked to libcrypto).
apt_packages=(wireguard-tools wireguard-go iproute2 iputils-ping iperf3 gcc libc6-dev libssl-dev)
# ... and the Python headers: a python3 from Debian needs python3-dev (pyenv's ships its own).
python3 -c 'import os, sysconfig; os.stat(os.path.join(sysconfig.get_paths()["include"], "Python.h"))' \
    2>/dev/null || apt_packages+=(python3-dev)
if [ "$purpose" = test ]; then
    # tests/test_podman.py: podman 4.3 with its CNI backend runs a busybox-static root filesystem. runc
    # too: podman pulls in crun, which refuses hybrid cgroup hosts ("cgroups in hybrid mode not supported").
    apt_packages+=(podman containernetworking-plugins busybox-static runc)
    # tests/test_kernel_mode.py boots Debian's kernel (which has the WireGuard module) under QEMU's
    # software emulation, with busybox-static in its initramfs.
    apt_packages+=(qemu-system-x86)
    # Load for the tests that must hold on a busy machine.
    apt_packages+=(stress-ng)
    # `make e2e` (tests/test_e2e.py): a private containerd 1.6 runs the node's CNI path and the agent's
    # image, built with podman on a Debian 12 base that mmdebstrap makes (no registry is reachable).
    apt_packages+=(containerd mmdebstrap)
fi

missing=()
for package in "${apt_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
updated=no
if [ ${#missing[@]} -eq 0 ]; then
    say "Debian packages: the ${#apt_packages[@]} $what are installed already"
else
    export DEBIAN_FRONTEND=noninteractive
    step "updating Debian's package lists (apt-get update)" apt-get update -qq
    updated=yes
    step "installing Debian packages: ${missing[*]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

if [ "$purpose" = test ]; then
    # tests/test_kernel_mode.py's kernel is extracted into VM_CACHE/<version> rather than installed:
    # installing it would run its hooks (initramfs, boot loader) and put a kernel this machine does
    # not run into /boot.
    VM_CACHE=${PYWG_VM_CACHE:-/var/cache/pywg-vm}
    kernel_package() {
        apt-cache depends linux-image-amd64 2>/dev/null |
            sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*\)$/\1/p' | head -n 1
    }
    package=$(kernel_package)
    if [ -z "$package" ] && [ $updated = no ]; then
        step "updating Debian's package lists (apt-get update), to find Debian's kernel" apt-get update -qq
        package=$(kernel_package)
    fi
    if [ -z "$package" ]; then
        echo "install-deps: apt knows no linux-image-amd64 (needed by tests/test_kernel_mode.py)" >&2
        exit 1
    fi
    version=${package#linux-image-}
    # Each command checked by hand: `step` runs it as an `if` condition, where set -e does not apply.
    extract_kernel() {
        mkdir -p "$VM_CACHE" || return
        find "$VM_CACHE" -mindepth 1 -maxdepth 1 -exec rm -rf {} + || return # older kernels, interrupted downloads
        work=$(mktemp -d "$VM_CACHE/.download.XXXXXX") || return # beside the result: the last step is a rename
        (cd "$work" && apt-get download -qq -o APT::Sandbox::User=root "$package") || return
        dpkg-deb -x "$work/$package"_*.deb "$work/root" || return
        mkdir -p "$work/kernel/lib/modules" || return
        mv "$work/root/boot/vmlinuz-$version" "$work/kernel/vmlinuz" || return
        mv "$work/root/lib/modules/$version" "$work/kernel/lib/modules/" || return
        mv "$work/kernel" "$VM_CACHE/$version" || return
        rm -rf "$work"
    }
    if [ -f "$VM_CACHE/$version/vmlinuz" ]; then
        say "Debian's kernel $version for tests/test_kernel_mode.py: in $VM_CACHE already"
    else
        step "unpacking Debian's kernel $version into $VM_CACHE, for tests/test_kernel_mode.py (about 400 MB)" \
            extract_kernel
    fi
fi

if [ "$purpose" = test ]; then
    # kubectl for the real API server (tests/support/k8s_cluster.py): Debian's kubernetes-client, 1.20 like that
    # server (kubectl supports one minor version of skew). Unpacked into E2E_CACHE rather than
    # installed: on some machines another package (Google Cloud SDK's kubectl) owns /usr/bin/kubectl.
    E2E_CACHE=${PYWG_E2E_CACHE:-/var/cache/pywg-e2e}
    client_version=$(apt-cache policy kubernetes-client 2>/dev/null | sed -n 's/^ *Candidate: //p')
    if [ -z "$client_version" ] || [ "$client_version" = "(none)" ]; then
        if [ $updated = no ]; then
            step "updating Debian's package lists (apt-get update), to find kubernetes-client" apt-get update -qq
            updated=yes
        fi
        client_version=$(apt-cache policy kubernetes-client 2>/dev/null | sed -n 's/^ *Candidate: //p')
    fi
    extract_kubectl() {
        mkdir -p "$E2E_CACHE" || return
        rm -rf "$E2E_CACHE/kubernetes-client" "$E2E_CACHE"/.kubectl.* || return
        work=$(mktemp -d "$E2E_CACHE/.kubectl.XXXXXX") || return
        (cd "$work" && apt-get download -qq -o APT::Sandbox::User=root kubernetes-client) || return
        dpkg-deb -x "$work"/kubernetes-client_*.deb "$work/root" || return
        echo "$client_version" >"$work/root/version" || return
        mv "$work/root" "$E2E_CACHE/kubernetes-client" || return
        rm -rf "$work"
    }
    if [ "$(cat "$E2E_CACHE/kubernetes-client/version" 2>/dev/null)" = "$client_version" ]; then
        say "kubectl $client_version (Debian's kubernetes-client): in $E2E_CACHE already"
    else
        step "unpacking kubectl $client_version (Debian's kubernetes-client) into $E2E_CACHE" extract_kubectl
    fi
fi

extras=""
[ "$purpose" = test ] && extras="[test]"
step "installing pywg, its Python dependencies and its C hot path: pip install -e '.$extras'" \
    python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore -e ".$extras"
say "done: what $what is installed"
