"""The CNI plugin under a real container runtime: Debian's podman 4.3 with its CNI backend.

podman reads a test-private containers.conf (CONTAINERS_CONF: network_backend = "cni", our plugin
directory and network config directory), keeps its storage and state in a test-private directory
(--root, --runroot, --tmpdir, runc's --root, the vfs driver, no events log), and runs a container
whose root filesystem is a directory holding busybox-static and its applet links (`--rootfs`; no
registry is needed). The network is a conflist whose one plugin is `pywg-cni` (a link to the installed console
script) with an inline `wireguard` config, attached as `net1`; the node agent runs in a `node`
namespace of the test and the WireGuard peer is wireguard-go in a `peer` namespace linked to it.
The container pings the peer through net1 with busybox ping. Everything podman made (container,
mounts, its network namespace, libcni's cached result) is removed, also when the test fails.

What podman 4.3 needs here: runc (Debian's crun refuses hybrid cgroup hosts), ulimits within the
host's hard limits, a result with a parseable `mac` on the sandbox interface, and a conflist
cniVersion of at most 1.0.0 (its libcni 1.1.2 fails on a 1.1.0 result).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shlex
import shutil
import subprocess
import tempfile
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.support.cni_run import PLUGIN, NodeAgent, PodKeys, config_json, node_with_peer
from tests.support.topology import NETNS_PREFIX, OWNER, OWNER_ENV, KeyPair, Topology, wait_until

pytest_plugins = ["tests.support.topology"]

pytestmark = pytest.mark.root

PEER_V4 = "10.1.2.1"
POD_ADDRESS = "10.1.2.2/32"
APPLETS = ("sh", "ping", "ip", "sleep", "cat", "ls")
CNI_CACHE = Path("/var/lib/cni/results")  # libcni's default cache; podman 4.3 cannot move it


def busybox_rootfs(directory: Path) -> Path:
    """A root filesystem of busybox-static: /bin/busybox and a link per applet we use."""
    busybox = shutil.which("busybox")
    assert busybox is not None, "busybox-static is not installed (scripts/install-deps.sh installs it)"
    (directory / "bin").mkdir(parents=True)
    shutil.copy2(busybox, directory / "bin" / "busybox")
    for applet in APPLETS:
        (directory / "bin" / applet).symlink_to("busybox")
    for empty in ("proc", "sys", "dev", "etc", "tmp", "run"):
        (directory / empty).mkdir()
    return directory


@dataclass
class Podman:
    """podman with containers.conf, storage and state (also runc's) all inside `workdir`.

    `containers` and `sandboxes` list what a test made, for `cleanup`.
    """

    workdir: Path
    containers: list[str] = field(default_factory=list)
    sandboxes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.plugins = self.workdir / "cni-plugins"
        self.networks = self.workdir / "networks"
        for directory in (self.plugins, self.networks, self.workdir / "tmp"):
            directory.mkdir(parents=True)
        (self.plugins / "pywg-cni").symlink_to(PLUGIN)  # runtimes find a plugin by its `type`
        # runc keeps container state in /run/runc unless told otherwise; podman's exit command
        # (`podman container cleanup`, run by conmon) drops --runtime-flag, so a wrapper says it.
        runc = shutil.which("runc")
        assert runc is not None, "runc is not installed (scripts/install-deps.sh installs it)"
        wrapper = self.workdir / "bin" / "runc"
        wrapper.parent.mkdir()
        wrapper.write_text(f'#!/bin/sh\nexec {runc} --root {self.workdir / "runc"} "$@"\n')
        wrapper.chmod(0o755)
        self.conf = self.workdir / "containers.conf"
        self.conf.write_text(
            textwrap.dedent(
                f"""\
                [containers]
                log_driver = "k8s-file"

                [engine]
                cgroup_manager = "cgroupfs"
                events_logger = "none"
                runtime = "runc"

                [engine.runtimes]
                runc = ["{wrapper}"]

                [network]
                network_backend = "cni"
                cni_plugin_dirs = ["{self.plugins}"]
                network_config_dir = "{self.networks}"
                """
            )
        )

    def install_plugin(self, env: dict[str, str]) -> None:
        """Our plugin as an operator installs it for a non-default agent socket: a wrapper that sets
        the environment, since podman runs some DELs (`podman container cleanup`, from conmon) with
        an environment of its own."""
        wrapper = self.plugins / "pywg-cni"
        settings = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
        wrapper.unlink()
        wrapper.write_text(f'#!/bin/sh\nexec env {settings} {shlex.quote(str(PLUGIN))} "$@"\n')
        wrapper.chmod(0o755)

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CNI_", "CONTAINERS_"))}
        env |= {"CONTAINERS_CONF": str(self.conf), "TMPDIR": str(self.workdir / "tmp"), OWNER_ENV: OWNER}
        return env

    def __call__(
        self, *args: str, check: bool = True, timeout: float = 60.0
    ) -> subprocess.CompletedProcess[str]:
        command = ["podman", "--root", str(self.workdir / "root"), "--runroot", str(self.workdir / "runroot")]
        command += ["--tmpdir", str(self.workdir / "libpod"), "--storage-driver", "vfs", *args]
        done = subprocess.run(
            command, capture_output=True, text=True, env=self.env(), timeout=timeout, check=False, cwd="/"
        )
        if check and done.returncode != 0:
            raise AssertionError(
                f"{' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
            )
        return done

    def add_network(self, name: str, plugins: list[dict[str, Any]], version: str = "1.0.0") -> None:
        conflist = {"cniVersion": version, "name": name, "plugins": plugins}
        (self.networks / f"{name}.conflist").write_text(json.dumps(conflist, indent=2))

    def sandbox(self, container: str) -> str:
        return self("inspect", "--format", "{{.NetworkSettings.SandboxKey}}", container).stdout.strip()

    def cleanup(self) -> None:
        """Remove our containers and whatever podman left: mounts, namespaces, cached results."""
        with contextlib.suppress(subprocess.TimeoutExpired):
            self("rm", "--force", "--time", "0", "--all", check=False, timeout=60)
        with open("/proc/self/mounts") as mounts:
            ours = [line.split()[1] for line in mounts if line.split()[1].startswith(str(self.workdir))]
        for mountpoint in sorted(ours, reverse=True):
            subprocess.run(["umount", "--lazy", mountpoint], check=False, capture_output=True)
        for sandbox in self.sandboxes:
            if sandbox and Path(sandbox).exists():
                subprocess.run(
                    ["ip", "netns", "delete", Path(sandbox).name], check=False, capture_output=True
                )
        for container in self.containers:
            for cached in CNI_CACHE.glob(f"*-{container}-*"):
                cached.unlink(missing_ok=True)
        shutil.rmtree(self.workdir, ignore_errors=True)


@pytest.fixture
def podman() -> Iterator[Podman]:
    runtime = Podman(Path(tempfile.mkdtemp(prefix=f"{NETNS_PREFIX}{OWNER}-podman-")))
    try:
        yield runtime
    finally:
        runtime.cleanup()


@pytest.mark.parametrize("version", ["1.0.0", "0.4.0", "0.3.1"])  # podman 4.3: libcni 1.1.2, no 1.1.0
def test_podman_container_pings_the_peer_through_net1(
    topology: Topology, podman: Podman, version: str
) -> None:
    node, peer = node_with_peer(topology)
    agent = NodeAgent(node).start()
    wg = PodKeys(KeyPair.generate(), [POD_ADDRESS])
    peer.serve([wg])
    network = f"wgnet-{secrets.token_hex(3)}"
    plugin = {
        "type": "pywg-cni",
        "wireguard": config_json(wg, peer, [f"{PEER_V4}/32"]),
    }
    podman.install_plugin(agent.plugin_env())
    podman.add_network(network, [plugin], version)
    rootfs = busybox_rootfs(podman.workdir / "rootfs")

    name = f"pywgt-{secrets.token_hex(4)}"
    run = podman(
        "run", "--detach", "--name", name,
        "--network", f"{network}:interface_name=net1",
        "--cap-add", "NET_RAW",
        "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024",
        "--rootfs", str(rootfs), "/bin/sleep", "300",
        check=False,
    )  # fmt: skip
    container = podman("inspect", "--format", "{{.Id}}", name, check=False).stdout.strip()
    podman.containers.append(container)
    assert run.returncode == 0, f"podman run failed:\n{run.stderr}\nagent log:\n{agent.log()}"
    sandbox = podman.sandbox(name)
    podman.sandboxes.append(sandbox)
    assert sandbox.startswith("/run/netns/"), sandbox

    attachments = agent.attachments()
    assert [(a["container_id"], a["ifname"], a["netns"], a["pod"]) for a in attachments] == [
        (container, "net1", sandbox, name)  # podman's CNI_ARGS carry K8S_POD_NAME=<container name> only
    ]
    shown = podman("exec", name, "ip", "addr", "show", "net1").stdout
    assert f"inet {POD_ADDRESS}" in shown, shown
    networks = json.loads(podman("inspect", "--format", "{{json .NetworkSettings.Networks}}", name).stdout)
    assert networks[network]["IPAddress"] == POD_ADDRESS.split("/")[0], networks
    ping = podman("exec", name, "ping", "-c", "1", "-W", "10", PEER_V4, check=False, timeout=30)
    assert ping.returncode == 0, f"{ping.stdout}\n{ping.stderr}\nagent log:\n{agent.log()}"
    assert "1 packets received" in ping.stdout, ping.stdout

    podman("stop", "--time", "0", name)  # podman's DEL
    assert agent.attachments() == []
    assert agent.state_files() == []
    podman("rm", name)
    wait_until(lambda: not Path(sandbox).exists(), 10.0, "podman to remove the container's namespace")
    assert list(CNI_CACHE.glob(f"*-{container}-*")) == []
