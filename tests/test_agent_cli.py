"""`python -m cni.agent_client status|list`: the node agent's status and attachments, against a real agent."""

from __future__ import annotations

import json
import secrets
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from ipaddress import ip_interface, ip_network
from pathlib import Path

import pytest

from cni.agent_client import EXIT_NOT_RUNNING
from pywg.config import InterfaceConfig, PeerConfig, to_json
from tests.support.cni_run import NodeAgent, netns_path
from tests.support.topology import KeyPair, Topology

pytest_plugins = ["tests.support.topology"]


def client(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "cni.agent_client", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


def add(agent: NodeAgent, topology: Topology, label: str, address: str) -> dict[str, str]:
    """An attachment with no peer endpoint (an idle tunnel) for Pod `default/<label>`."""
    cfg = InterfaceConfig(
        private_key=KeyPair.generate().private,
        addresses=[ip_interface(address)],
        peers=[PeerConfig(public_key=KeyPair.generate().public, allowed_ips=[ip_network("10.201.0.0/24")])],
    )
    ref = {"container_id": secrets.token_hex(32), "ifname": "net1", "netns": netns_path(topology.host(label))}
    reply = agent.call("add", **ref, pod=f"default/{label}", config=to_json(cfg))
    assert reply.get("ok") is True, reply
    return {**ref, "name": reply["name"], "pod": f"default/{label}", "port": str(reply["listen_port"])}


@pytest.fixture
def agent(topology: Topology) -> Iterator[NodeAgent]:
    yield NodeAgent(topology.host("node")).start()


@pytest.mark.root
def test_status_and_list_of_a_running_agent(agent: NodeAgent, topology: Topology) -> None:
    sock = str(agent.socket)
    empty = client("list", "--socket", sock)
    assert (empty.returncode, empty.stdout) == (0, "no attachments\n"), empty.stderr
    pods = [add(agent, topology, f"pod-{i}", f"10.200.0.{i + 1}/32") for i in range(2)]

    status = client("status", "--socket", sock)
    assert status.returncode == 0, status.stderr
    worker = agent.worker_pid()
    assert status.stdout == (
        f"node agent pid {worker} on {sock}: 2 attachment(s); 2 userspace tunnel(s) running\n"
    )

    listed = client("list", "--socket", sock)
    assert listed.returncode == 0, listed.stderr
    header, *rows = listed.stdout.splitlines()
    assert header.split() == ["NAME", "POD", "IFNAME", "MODE", "PORT", "RUNNING", "CONTAINER", "NETNS"]
    expected = [
        [p["name"], p["pod"], "net1", "userspace", p["port"], "yes", p["container_id"][:12], p["netns"]]
        for p in pods
    ]
    assert sorted(row.split() for row in rows) == sorted(expected)

    raw = client("list", "--json", "--socket", sock)
    assert raw.returncode == 0, raw.stderr
    assert json.loads(raw.stdout) == agent.call("list")
    assert json.loads(client("status", "--json", "--socket", sock).stdout)["pid"] == worker


@pytest.mark.root
def test_no_agent_is_a_clear_error_with_its_own_exit_status(agent: NodeAgent) -> None:
    agent.terminate()  # the socket goes with the agent
    for command in ("status", "list"):
        done = client(command, "--socket", str(agent.socket))
        assert done.returncode == EXIT_NOT_RUNNING and done.stdout == ""
        assert "the pywg node agent is not running" in done.stderr and str(agent.socket) in done.stderr
        assert "Traceback" not in done.stderr


def test_a_socket_that_answers_nonsense_is_exit_status_1(tmp_path: Path) -> None:
    path = tmp_path / "odd.sock"
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(path))
        server.listen(1)

        def answer() -> None:
            connection, _ = server.accept()
            with connection:
                connection.recv(65536)
                connection.sendall(b"not json\n")

        thread = threading.Thread(target=answer, daemon=True)
        thread.start()
        done = client("status", "--socket", str(path))
        thread.join(10)
    assert done.returncode == 1 and done.stdout == ""
    assert "something that is not JSON" in done.stderr and "Traceback" not in done.stderr


def test_usage_errors_exit_2() -> None:
    done = client("restart")
    assert done.returncode == 2 and "invalid choice" in done.stderr
