"""The node agent as the DaemonSet runs it, on the host's network, and a WireGuard peer it reaches there.

The DaemonSet's agent has `hostNetwork: true`: its UDP sockets are in the host's network namespace, so
its peers must be reachable from there, while tests send traffic only on loopback or inside namespaces
they create. `LoopbackPeer` is wireguard-go started in the host's namespace, its UDP socket reached at
127.0.0.1:PORT, with its interface moved into a namespace of the test (`ip link set netns`), where the
tunnel addresses and routes are: wireguard-go keeps the TUN's file descriptor, which serves the
interface wherever it is. Its UAPI socket is in /var/run/wireguard as usual.

`InClusterAgent` runs `python -m cni.agent --supervise` in the host's network namespace with the
credentials a Pod of the DaemonSet has: KUBERNETES_SERVICE_HOST/PORT, and the ServiceAccount's token,
CA and namespace at /var/run/secrets/kubernetes.io/serviceaccount, bind-mounted in a mount namespace of
its own (`unshare --mount --propagation slave`: namespaces the test adds under /run/netns later still
appear in it). The mount point is made on the host if it is missing and removed again at the end.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
from collections.abc import Iterable, Sequence
from ipaddress import ip_interface, ip_network
from pathlib import Path

from pywg.config import InterfaceConfig, PeerConfig
from tests.support.cni_run import PEER_TUNNEL, NodeAgent, PodKeys
from tests.support.k8s_cluster import SERVICE_ACCOUNT_PATH
from tests.support.topology import (
    OWNER,
    OWNER_ENV,
    WG_SOCKET_DIR,
    Host,
    KeyPair,
    run,
    stop_process,
    unique_ifname,
    wait_until,
    wg_setconf_text,
)


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _accepts(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(str(path))
        except OSError:
            return False
    return True


class LoopbackPeer:
    """wireguard-go on the host's network at 127.0.0.1:`port`, its interface (PEER_TUNNEL) in `host`."""

    def __init__(self, host: Host, tunnel: Sequence[str] = PEER_TUNNEL) -> None:
        self.host = host
        self.tunnel = list(tunnel)
        self.keys = KeyPair.generate()
        self.port = free_udp_port()
        self.ifname = unique_ifname()
        self.log_path = host.tmpdir / f"{self.ifname}.log"
        self.process: subprocess.Popen[bytes] | None = None
        host.on_close(self.stop)

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def serve(self, pods: Iterable[PodKeys]) -> None:
        """(Re)configure wireguard-go with one WireGuard peer per pod, allowed the pod's addresses."""
        config = InterfaceConfig(
            private_key=self.keys.private,
            listen_port=self.port,
            peers=[
                PeerConfig(
                    public_key=pod.keys.public,
                    allowed_ips=[ip_network(ip_interface(a).ip) for a in pod.addresses],
                )
                for pod in pods
            ],
        )
        if self.process is None:
            self._start()
        path = self.host.write_secret(f"{self.ifname}.conf", wg_setconf_text(config))
        try:
            run(["wg", "setconf", self.ifname, str(path)])
        finally:
            path.unlink(missing_ok=True)

    def _start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                ["wireguard-go", "-f", self.ifname],
                env={**os.environ, "LOG_LEVEL": "error", "WG_PROCESS_FOREGROUND": "1", OWNER_ENV: OWNER},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        process, socket_path = self.process, WG_SOCKET_DIR / f"{self.ifname}.sock"

        def ready() -> bool:
            if process.poll() is not None:
                raise AssertionError(f"wireguard-go exited with {process.returncode}:\n{self.log()}")
            return _accepts(socket_path)

        wait_until(ready, 10.0, f"the UAPI socket {socket_path}")
        run(["ip", "link", "set", "dev", self.ifname, "netns", self.host.name])
        self.host.ip("link", "set", "dev", self.ifname, "mtu", "1420", "up")
        for address in self.tunnel:
            self.host.add_address(self.ifname, address)

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)
            self.process = None
        (WG_SOCKET_DIR / f"{self.ifname}.sock").unlink(missing_ok=True)


class InClusterAgent(NodeAgent):
    """The agent on the host's network with a Pod's in-cluster credentials; its files in `node`'s
    directory (`node`'s network namespace is not used: the DaemonSet's agent has the host's)."""

    def __init__(
        self,
        node: Host,
        service_account: Path,
        api_port: int,
        args: Sequence[str] = (),
        supervise: bool = True,
    ) -> None:
        self.made: list[Path] = []  # mount point directories made on the host, deepest last
        node.on_close(self._remove_mount_point)  # before NodeAgent's stop: called after it
        super().__init__(node, args=args, supervise=supervise)
        self.service_account = service_account
        self.api_port = api_port

    def start(self) -> InClusterAgent:
        for directory in reversed([SERVICE_ACCOUNT_PATH, *SERVICE_ACCOUNT_PATH.parents]):
            if not directory.exists():
                directory.mkdir(mode=0o755)
                self.made.append(directory)
        agent = [sys.executable, "-m", "cni.agent", *self.args]
        agent += ["--supervise"] if self.supervise else []
        agent += ["--state-dir", str(self.state_dir), "--socket", str(self.socket)]
        command = [
            "unshare", "--mount", "--propagation", "slave", "--",
            "sh", "-c", 'mount --bind -o ro "$1" "$2" && shift 2 && exec "$@"', "sh",
            str(self.service_account), str(SERVICE_ACCOUNT_PATH), *agent,
        ]  # fmt: skip
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("KUBERNETES_")},
            "KUBERNETES_SERVICE_HOST": "127.0.0.1",
            "KUBERNETES_SERVICE_PORT": str(self.api_port),
            OWNER_ENV: OWNER,
        }
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                command,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self.wait_until_serving()

    def _remove_mount_point(self) -> None:
        for directory in reversed(self.made):
            with contextlib.suppress(OSError):  # another run may be using it
                directory.rmdir()
        self.made.clear()
