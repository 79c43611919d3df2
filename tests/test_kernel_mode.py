"""The CNI plugin's `mode` (issue #5): kernel WireGuard links, userspace tunnels, and auto.

On this machine, through the installed `pywg-cni` and a node agent of the test's own in a `node`
namespace: `mode: kernel` on a kernel without WireGuard is a CNI error that says so and leaves nothing,
and `auto` falls back to userspace with the same result as the kernel path gives. (On a kernel with
WireGuard the same tests check that both get a kernel link instead.)

The kernel path itself runs in a VM (tests/support/vm.py) that boots Debian's kernel under QEMU with this
machine's root filesystem, loads the wireguard module, and runs tests/support/kernel_scenario.py: the compiled
entrypoint is executed as Multus executes it, for ADD (kernel, then auto), CHECK, a refused second Pod,
an agent restart, CHECK after tampering, DEL, DEL again, a failed ADD, GC and DEL after the namespace
went, with pings through net1 to a kernel WireGuard peer. Each step's outcome comes back through a
shared directory; a failure shows the step, the agent's log and the VM's console.
"""

from __future__ import annotations

import json
import secrets
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cni import plugin
from cni.build_entrypoint import build
from cni.spec import NOT_AVAILABLE, UNSUPPORTED_FIELD
from tests.support import vm
from tests.support.cni_run import (
    CniCall,
    NodeAgent,
    Peer,
    PodKeys,
    cni_args,
    config_json,
    invoke,
    leftovers,
    netns_path,
    node_with_peer,
)
from tests.support.kernel_scenario import STEPS, expected_result
from tests.support.topology import Host, KeyPair, Topology

pytest_plugins = ["tests.support.topology"]

ROOT = Path(__file__).resolve().parent.parent
PEER_V4 = "10.1.2.1"
ALLOWED = ["10.1.2.0/24"]
VM_TIMEOUT = 270.0  # below pytest's 300 s, so a hung VM is reported with its console
HIDDEN_IN_VM = (Path("/run"), Path("/proc"), Path("/sys"), Path("/dev"))


@dataclass
class Lab:
    topology: Topology
    node: Host
    peer: Peer
    agent: NodeAgent

    def pod(self, name: str, address: str) -> tuple[Host, PodKeys, str]:
        return self.topology.host(name), PodKeys(KeyPair.generate(), [address]), secrets.token_hex(32)

    def cni(
        self, command: str, host: Host, cid: str, mode: str, wireguard: dict[str, Any], **extra: Any
    ) -> CniCall:
        netconf = {
            "cniVersion": "1.1.0",
            "name": "wgnet",
            "type": "pywg-cni",
            "mode": mode,
            "wireguard": wireguard,
            **extra,
        }
        args = cni_args("default", host.label, cid, "uid")
        env = self.agent.plugin_env()
        return invoke(command, netconf, container_id=cid, netns=netns_path(host), args=args, env=env)

    def node_links(self) -> list[str]:
        """Links the agent would make on the node for the kernel path (temporary and probe names)."""
        names = [line.split(":")[1].strip() for line in self.node.ip("-o", "link", "show").splitlines()]
        return [name for name in names if name.startswith(("wgcni", "wgprobe"))]


@pytest.fixture
def lab(topology: Topology) -> Lab:
    node, peer = node_with_peer(topology)
    return Lab(topology, node, peer, NodeAgent(node).start())


def has_wireguard(node: Host) -> bool:
    """Whether this kernel can make WireGuard links (tried in the test's own namespace)."""
    done = node.run(["ip", "link", "add", "wgtest0", "type", "wireguard"], check=False)
    if done.returncode == 0:
        node.ip("link", "del", "wgtest0")
    return done.returncode == 0


def kind_of_net1(host: Host) -> str:
    details = host.ip("-d", "link", "show", "net1").split()
    return "wireguard" if "wireguard" in details else "tun" if "tun" in details else " ".join(details)


@pytest.mark.root
def test_mode_kernel_without_wireguard_is_refused_cleanly(lab: Lab) -> None:
    host, keys, cid = lab.pod("pod-a", "10.1.2.2/32")
    config = config_json(keys, lab.peer, ALLOWED)
    call = lab.cni("ADD", host, cid, "kernel", config)
    if has_wireguard(lab.node):
        assert call.ok() == expected_result(netns_path(host), "10.1.2.2/32", ALLOWED)
        assert kind_of_net1(host) == "wireguard"
    else:
        error = call.error("1.1.0")
        assert error["code"] == UNSUPPORTED_FIELD, error
        for fragment in ('mode "kernel"', "has no WireGuard", '"mode": "userspace"', '"auto"'):
            assert fragment in error["msg"], error
        assert keys.keys.private_b64[:16] not in call.stdout + call.stderr
        assert leftovers(lab.agent, cid, "net1", netns_path(host)) == []
    assert lab.cni("DEL", host, cid, "kernel", config).ok() is None
    assert leftovers(lab.agent, cid, "net1", netns_path(host)) == []
    assert lab.node_links() == []


@pytest.mark.root
def test_auto_uses_what_the_node_has(lab: Lab) -> None:
    host, keys, cid = lab.pod("pod-a", "10.1.2.2/32")
    lab.peer.serve([keys])
    config = config_json(keys, lab.peer, ALLOWED)
    result = lab.cni("ADD", host, cid, "auto", config).ok()
    assert result == expected_result(netns_path(host), "10.1.2.2/32", ALLOWED)
    mode = "kernel" if has_wireguard(lab.node) else "userspace"
    assert [a["mode"] for a in lab.agent.attachments()] == [mode]
    assert kind_of_net1(host) == ("wireguard" if mode == "kernel" else "tun")
    assert host.ping(PEER_V4, timeout=10)
    assert lab.cni("CHECK", host, cid, "auto", config, prevResult=result).ok() is None
    assert lab.cni("DEL", host, cid, "auto", config).ok() is None
    assert leftovers(lab.agent, cid, "net1", netns_path(host)) == []
    assert lab.node_links() == []


@pytest.mark.root
def test_status_asks_for_a_tun_only_where_userspace_may_be_used(
    lab: Lab, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(plugin, "TUN_DEVICE", Path("/nonexistent/net/tun"))
    monkeypatch.setenv("PYWG_CNI_AGENT_SOCKET", str(lab.agent.socket))
    env = {"CNI_COMMAND": "STATUS", "CNI_PATH": "/opt/cni/bin"}
    for mode, expected in (("kernel", 0), ("auto", 1), ("userspace", 1)):
        netconf = {"cniVersion": "1.1.0", "name": "wgnet", "type": "pywg-cni", "mode": mode}
        status, output = plugin.run(env, json.dumps(netconf).encode())
        assert status == expected, (mode, output)
        if expected:
            assert output is not None and output["code"] == NOT_AVAILABLE, output


# --- the kernel path, in a VM -----------------------------------------------------------------------


def _visible_in_vm(path: Path) -> bool:
    return not any(path.resolve().is_relative_to(hidden) for hidden in HIDDEN_IN_VM)


def _steps(results: Path) -> dict[str, dict[str, Any]]:
    path = results / "steps.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    return {step["step"]: step for step in map(json.loads, lines)}


def _failure(run: vm.VmRun, message: str) -> str:
    agent_log = run.results / "agent.log"
    log = agent_log.read_text(errors="replace")[-4000:] if agent_log.exists() else "(none)"
    return (
        f"{message}\n--- the agent's log in the VM ---\n{log}\n--- the VM's console ---\n{run.console_tail()}"
    )


@pytest.mark.vm
@pytest.mark.slow
def test_kernel_mode_in_a_vm(tmp_path: Path) -> None:
    for needed in (ROOT, Path(sys.executable)):
        assert _visible_in_vm(needed), f"{needed} is under a directory the VM mounts over: {HIDDEN_IN_VM}"
    results = tmp_path / "results"
    results.mkdir()
    build(results / "pywg-cni")
    env = {
        "PATH": f"{Path(sys.executable).parent}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": "/run/tmp",
        "TMPDIR": "/run/tmp",  # the host's /tmp is there, read-only like the rest of its root
        "LANG": "C.UTF-8",
        "PYTHONPATH": str(ROOT),
        "PYTHONDONTWRITEBYTECODE": "1",  # the root filesystem is read-only in the VM
    }
    command = (
        f"cd {ROOT} && exec {sys.executable} -m tests.support.kernel_scenario "
        "/run/results /run/results/pywg-cni"
    )
    started = time.monotonic()
    try:
        run = vm.run_vm(tmp_path, command, modules=["wireguard", "veth"], env=env, timeout=VM_TIMEOUT)
    except vm.VmError as error:
        pytest.fail(f"{error}\nsteps so far: {list(_steps(results).values())}")
    steps = _steps(results)
    for name in STEPS:
        step = steps.get(name)
        if step is None:
            pytest.fail(_failure(run, f"the VM never reported step {name!r} (job status {run.status})"))
        if not step["ok"]:
            pytest.fail(_failure(run, f"step {name!r} failed in the VM:\n{step['detail']}"))
    assert run.status == 0, _failure(run, f"the scenario exited with {run.status}")
    timings = ", ".join(f"{name}: {steps[name]['detail']}" for name in STEPS)
    print(f"\nkernel mode in a VM: {time.monotonic() - started:.0f} s in all; {timings}")
