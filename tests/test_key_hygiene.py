"""Key hygiene: private and preshared keys stay in root-only files and in memory, nowhere else.

With real processes in real namespaces: `pywg up` (daemon and --foreground, a private key and a
preshared key each, a session made by traffic) and the CNI node agent (`python -m cni.agent
--supervise`, after an `add` with traffic). Every place a key could leak to is searched for the
base64, hex and raw forms of each secret key, and for any fragment of them long enough to be one
(16 characters, 8 raw bytes): a shortened key is still a leak. The places: /proc/PID/cmdline and
/proc/PID/environ of every process involved (the `pywg up` that waits for its daemon, the daemon,
the foreground process, the agent's supervisor and worker), the logs, the state files that must
not hold keys, what every command prints, the errors for bad configs that hold a good key beside a
bad one (at start, on SIGHUP, through the agent and the CNI plugin), refused UAPI requests that
carry key text, and `pywg up --help`. The UAPI output itself is not searched: `wg show NAME dump`
prints the keys to root by design.

Modes: /run/pywg 0700 with 0600 state and log files, UAPI sockets srwx------ owned by root (and
`wg show` as `nobody` fails with "Permission denied"), the agent's socket 0600 in a 0700
directory, its state files 0600 in a 0700 directory and the only files that hold the key.

The in-memory side, key buffers zeroed 540 s after the last handshake, runs on tests/support/netsim.py's
fake clock; tests/test_timers.py::test_keys_zeroed_after_540s checks the sending key of the current
keypair, this checks every buffer of every keypair on both sides and the handshake state.

Assertion messages name the secret and the form found (`psk/hex`), never the key itself.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import secrets
import signal
import stat
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import ip_interface, ip_network
from pathlib import Path
from typing import Any

import pytest

from pywg.cli import build_parser
from pywg.config import EndpointSpec, InterfaceConfig, PeerConfig, to_json
from pywg.core.constants import REKEY_AFTER_TIME, ZERO_KEY_MATERIAL_AFTER
from pywg.core.noise import HandshakeState
from pywg.runtime.uapi_server import query, socket_path
from tests.support.cni_run import NodeAgent
from tests.support.device_io import send_packet
from tests.support.netsim import Network, connect, ipv4_packet
from tests.support.pywg_run import STATE_DIR, PywgUp, pids_with_argument, pywg_argv
from tests.support.topology import (
    KeyPair,
    Topology,
    WireguardGo,
    generate_psk,
    link,
    run,
    tunnel_configs,
    wait_until,
)
from tests.test_agent import netns_path

pytest_plugins = ["tests.support.topology"]

A_UNDER, B_UNDER = "192.0.2.1", "192.0.2.2"
NODE_IP, PEER_IP = "192.168.77.1", "192.168.77.2"
FRAGMENT_CHARS = 16  # of base64 (96 bits) or hex (64 bits)
FRAGMENT_BYTES = 8
NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
SYSTEM_PYTHON = "/usr/bin/python3"  # readable by nobody, unlike a virtualenv under /root


# --- looking for keys -----------------------------------------------------------------------------


def _fragments(text: bytes, size: int) -> list[bytes]:
    return [text[i : i + size] for i in range(len(text) - size + 1)]


@dataclass
class Secrets:
    """The secret keys of a test, by label; `found_in` names those a text holds, in any form."""

    keys: dict[str, bytes]

    def found_in(self, data: bytes | str) -> list[str]:
        raw = data.encode("utf-8", "surrogateescape") if isinstance(data, str) else bytes(data)
        lowered = raw.lower()
        found = []
        for label, key in self.keys.items():
            forms = {
                "base64": (raw, _fragments(base64.b64encode(key)[:43], FRAGMENT_CHARS)),
                "urlsafe-base64": (raw, _fragments(base64.urlsafe_b64encode(key)[:43], FRAGMENT_CHARS)),
                "hex": (lowered, _fragments(key.hex().encode(), FRAGMENT_CHARS)),
                "raw": (raw, _fragments(key, FRAGMENT_BYTES)),
            }
            found += [
                f"{label}/{form}" for form, (hay, parts) in forms.items() if any(p in hay for p in parts)
            ]
        return found

    def assert_absent(self, what: str, data: bytes | str) -> None:
        found = self.found_in(data)
        assert not found, f"{what} holds key material: {found}"


def test_the_search_finds_every_form_and_fragment() -> None:
    key = bytes([0xFB, 0xEF, 0xFF] * 10 + [1, 2])  # its base64 has '+' and '/', its url-safe form '-' and '_'
    keys = Secrets({"k": key})
    b64 = base64.b64encode(key).decode()
    assert keys.found_in(f"x={b64}\n") == ["k/base64"]
    assert keys.found_in(b64[10:26]) == ["k/base64"]  # 16 characters from the middle
    assert keys.found_in(b64[10:25]) == []
    assert keys.found_in(base64.urlsafe_b64encode(key)) == ["k/urlsafe-base64"]
    assert keys.found_in(key.hex().upper()[20:36]) == ["k/hex"]
    assert keys.found_in(b"\0" + key[3:11] + b"\0") == ["k/raw"]
    assert keys.found_in("nothing to see " * 10) == []


def _proc(pid: int) -> dict[str, bytes]:
    texts = {}
    for name in ("cmdline", "environ"):
        with open(f"/proc/{pid}/{name}", "rb") as f:
            texts[name] = f.read()
    return texts


def assert_process_clean(keys: Secrets, pid: int, what: str) -> None:
    for name, text in _proc(pid).items():
        keys.assert_absent(f"/proc/{pid}/{name} of {what}", text)


def assert_mode(path: Path, mode: int, kind: int = stat.S_IFREG) -> None:
    info = path.lstat()
    assert stat.S_IFMT(info.st_mode) == kind, f"{path} is not the expected kind of file"
    assert stat.S_IMODE(info.st_mode) == mode, f"{path} has mode {stat.S_IMODE(info.st_mode):o}, not {mode:o}"
    assert info.st_uid == 0, f"{path} belongs to uid {info.st_uid}"


def assert_nobody_cannot_use_uapi(name: str) -> None:
    """`wg show NAME` as nobody: refused by the socket's mode."""
    for args in (["show", name], ["show", name, "dump"]):
        done = run([*NOBODY, "wg", *args], check=False, timeout=10.0)
        # Not `done` in the message: a dump that got through would show the private key.
        assert done.returncode != 0 and done.stdout == "", f"`wg {' '.join(args)}` worked as nobody"
        assert "Permission denied" in done.stderr, done.stderr


def assert_nobody_cannot_read(path: Path) -> None:
    done = run([*NOBODY, "cat", str(path)], check=False, timeout=10.0)
    assert done.returncode != 0 and done.stdout == "", f"nobody could read {path}"
    assert "Permission denied" in done.stderr, done.stderr


def key_laden_uapi_requests(private: bytes, psk: bytes, peer: bytes) -> list[bytes]:
    """Requests a UAPI server must refuse, each carrying key text where a log line could quote it."""
    private_hex, psk_hex, peer_hex = private.hex(), psk.hex(), peer.hex()
    return [
        f"set=1\nprivate_key={private_hex}0\n\n".encode(),  # 65 hex digits
        f"set=1\n{psk_hex}={private_hex}\n\n".encode(),  # an unknown key named by a key
        f"set=1\npublic_key={peer_hex}\npreshared_key={psk_hex[:-1]}x\n\n".encode(),
        f"set=1\nlisten_port={private_hex}\n\n".encode(),
        f"set=1\npublic_key={peer_hex}\nendpoint={psk_hex}:1\n\n".encode(),
        f"set=1\n{base64.b64encode(private).decode()}\n\n".encode(),  # a line without "="
        f"get=1\n{psk_hex}\n\n".encode(),
        f"{private_hex}=1\n\n".encode(),  # an unknown operation
    ]


# --- pywg up ----------------------------------------------------------------------------------------


def _up_watching_the_parent(pywg: PywgUp, keys: Secrets) -> subprocess.CompletedProcess[str]:
    """`pywg up` (daemon mode); while it waits for its daemon, search every process of the tunnel."""
    out, err = pywg.host.tmpdir / "up.out", pywg.host.tmpdir / "up.err"
    with open(out, "wb") as stdout, open(err, "wb") as stderr:
        process = pywg.host.popen(pywg.argv(), stdout=stdout, stderr=stderr)
    seen: set[int] = set()
    deadline = time.monotonic() + 20.0
    while process.poll() is None and time.monotonic() < deadline:
        for pid in pids_with_argument(pywg.name):
            try:
                assert_process_clean(keys, pid, f"`pywg up` (pid {pid}, started as {process.pid})")
            except OSError:
                continue  # gone meanwhile
            seen.add(pid)
        time.sleep(0.02)
    status = process.wait(5.0)
    keys.assert_absent(
        "`pywg up` and its daemon's log", out.read_bytes() + err.read_bytes() + pywg.log().encode()
    )
    assert status == 0, err.read_text() + pywg.log()
    assert process.pid in seen, "never saw `pywg up` itself while it waited for its daemon"
    return subprocess.CompletedProcess(process.args, 0, out.read_text(), err.read_text())


@pytest.mark.root
def test_pywg_up_keeps_keys_out_of_processes_logs_and_output(topology: Topology) -> None:
    a, b = topology.host("a"), topology.host("b")
    link(a, b, [f"{A_UNDER}/24"], [f"{B_UNDER}/24"])
    keys_a, keys_b, psk = KeyPair.generate(), KeyPair.generate(), generate_psk()
    inner_a, inner_b = ["10.99.0.1/24"], ["10.99.0.2/24"]
    cfg_a, cfg_b = tunnel_configs(keys_a, keys_b, inner_a, inner_b, A_UNDER, B_UNDER, psk=psk)
    keys = Secrets({"private-a": keys_a.private, "private-b": keys_b.private, "psk": psk})

    # A: a JSON Secret, as a daemon (unknown keys named by key text: BAD_CONFIGS).
    daemon = PywgUp(a, to_json(cfg_a), suffix=".json")
    done = _up_watching_the_parent(daemon, keys)
    keys.assert_absent("`pywg up` output", done.stdout + done.stderr)
    # B: in the foreground.
    foreground = PywgUp(b, cfg_b)
    foreground.start_foreground()

    # Sessions on both ends.
    assert a.ping("10.99.0.2", timeout=10.0) and b.ping("10.99.0.1", timeout=5.0)

    # Refused UAPI requests and a SIGHUP with a bad config leave log lines, without the keys.
    for pywg, own, other in ((daemon, keys_a, keys_b), (foreground, keys_b, keys_a)):
        for request in key_laden_uapi_requests(own.private, psk, other.public):
            reply = query(pywg.socket_path, request)
            assert reply.startswith(b"errno=-") and reply.endswith(b"\n\n"), reply
    daemon.write_config(
        f"[Interface]\nPrivateKey = {keys_a.private_b64}\n\n[Peer]\nPublicKey = {keys_b.private.hex()}\n"
        f"PresharedKey = {base64.b64encode(psk).decode()}\nAllowedIPs = 10.99.0.2/32\n"
    )
    os.kill(daemon.pid, signal.SIGHUP)
    wait_until(lambda: "reload failed" in daemon.log(), 5.0, "the daemon to log the failed reload")
    assert a.ping("10.99.0.2", timeout=5.0)  # still running the old configuration

    # What root sees without asking for the keys.
    for pywg in (daemon, foreground):
        keys.assert_absent("`wg show`", pywg.wg("show", pywg.name))
        keys.assert_absent("`pywg stats`", pywg.host.run(pywg_argv("stats", pywg.name)).stdout)

    # Processes, state files, logs; neither daemon can dump core.
    daemon_pid, foreground_pid = daemon.pid, foreground.pid
    for pid in (daemon_pid, foreground_pid):
        assert "Max core file size        0                    0" in Path(f"/proc/{pid}/limits").read_text()
    assert foreground.process is not None and foreground_pid == foreground.process.pid
    assert pids_with_argument(daemon.name) == [daemon_pid]
    assert pids_with_argument(foreground.name) == [foreground_pid]
    assert_process_clean(keys, daemon_pid, "the daemon")
    assert_process_clean(keys, foreground_pid, "`pywg up --foreground`")
    assert_mode(STATE_DIR, 0o700, stat.S_IFDIR)
    for path in (STATE_DIR / f"{daemon.name}.json", STATE_DIR / f"{daemon.name}.log"):
        assert_mode(path, 0o600)
        keys.assert_absent(str(path), path.read_bytes())
    assert_mode(STATE_DIR / f"{foreground.name}.json", 0o600)
    keys.assert_absent("the foreground state file", (STATE_DIR / f"{foreground.name}.json").read_bytes())
    assert "UAPI set stopped" in daemon.log() and "UAPI set stopped" in foreground.log()

    # Root only: the UAPI sockets, and the files.
    for pywg in (daemon, foreground):
        assert_mode(pywg.socket_path, 0o700, stat.S_IFSOCK)
        assert_nobody_cannot_use_uapi(pywg.name)
    assert not stat.S_IMODE(daemon.socket_path.parent.stat().st_mode) & 0o022
    assert_nobody_cannot_read(STATE_DIR / f"{daemon.name}.log")

    # Stopping adds log lines and output; still no key.
    done = daemon.down()
    keys.assert_absent("`pywg down`", done.stdout + done.stderr)
    foreground.close()
    keys.assert_absent("the daemon's log", (STATE_DIR / f"{daemon.name}.log").read_bytes())
    keys.assert_absent("the foreground output", foreground.log())
    assert "Traceback" not in daemon.log() + foreground.log()


# Configs that hold a good private key and a preshared key beside one bad value. The bad values are
# key text or hold it, so a parser that quotes what it refuses would show a key.
OWN, OTHER, PSK = KeyPair.generate(), KeyPair.generate(), generate_psk()
PSK_B64 = base64.b64encode(PSK).decode()
_INTERFACE = f"[Interface]\nPrivateKey = {OWN.private_b64}\nAddress = 10.5.0.1/24\n"
_PEER = f"[Peer]\nPublicKey = {OTHER.public_b64}\nPresharedKey = {PSK_B64}\nAllowedIPs = 10.5.0.2/32\n"


def _json(**changes: Any) -> str:
    peer = {"publicKey": OTHER.public_b64, "presharedKey": PSK_B64, "allowedIPs": ["10.5.0.2/32"]}
    doc: dict[str, Any] = {"address": "10.5.0.1/24", "privateKey": OWN.private_b64}
    for name, value in changes.items():
        target = peer if name.startswith("peer_") else doc
        target[name.removeprefix("peer_")] = value
        if value is None:
            del target[name.removeprefix("peer_")]
    return json.dumps({**doc, "peers": [peer]})


def _ini(old: str = "", new: str = "") -> str:
    return (_INTERFACE + _PEER).replace(old, new, 1) if old else _INTERFACE + _PEER


BAD_CONFIGS = {
    "ini-public-key-is-the-private-key-in-hex": (".conf", _ini(OTHER.public_b64, OWN.private.hex())),
    "ini-public-key-not-base64": (".conf", _ini(OTHER.public_b64, OWN.private_b64[:-2] + "!=")),
    "ini-psk-twice": (".conf", _ini(PSK_B64, PSK_B64 + PSK_B64)),
    "ini-private-key-then-psk": (".conf", _ini(OWN.private_b64, f"{OWN.private_b64} {PSK_B64}")),
    "ini-endpoint-is-the-psk": (".conf", _ini() + f"Endpoint = {PSK_B64}:51820\n"),
    "ini-allowed-ip-is-a-key": (".conf", _ini("10.5.0.2/32", f"10.5.0.2/32, {PSK.hex()}/32")),
    "ini-mtu-is-a-key": (".conf", _ini("[Peer]", f"MTU = {OWN.private_b64}\n[Peer]")),
    "ini-listen-port-is-a-key": (".conf", _ini("[Peer]", f"ListenPort = {PSK.hex()}\n[Peer]")),
    "ini-a-key-alone-on-a-line": (".conf", _ini() + f"{PSK_B64}\n"),
    "ini-a-key-as-a-section": (".conf", _ini("[Peer]", f"[{OWN.private_b64}]\n[Peer]")),
    "json-public-key-is-the-private-key-in-hex": (".json", _json(peer_publicKey=OWN.private.hex())),
    "json-psk-with-a-stray-character": (".json", _json(peer_presharedKey=PSK_B64[:-1] + "A=")),
    "json-keepalive-is-a-key": (".json", _json(peer_persistentKeepalive=PSK_B64)),
    "json-fwmark-is-a-key": (".json", _json(fwmark=OWN.private.hex())),
    "json-address-list-with-a-key": (".json", _json(address=["10.5.0.1/24", OWN.private_b64])),
    "json-cut-after-the-key": (".json", _json()[:70]),
    "ini-colon-instead-of-equals": (".conf", _ini("PrivateKey =", "PrivateKey:")),
    "json-private-key-misspelt": (".json", _json(privateKey=None, private_key=OWN.private_b64)),
    "json-unknown-key-named-by-a-key": (".json", _json(**{PSK.hex(): OWN.private_b64})),
    "json-unknown-peer-key-named-by-a-key": (".json", _json(**{f"peer_{PSK_B64}": 1})),
}


@pytest.mark.root
@pytest.mark.slow
def test_bad_configs_never_show_the_keys(topology: Topology) -> None:
    host = topology.host("solo")
    keys = Secrets({"private": OWN.private, "psk": PSK})
    for case, (suffix, text) in BAD_CONFIGS.items():
        pywg = PywgUp(host, text, suffix=suffix)
        done = pywg.up(check=False)
        keys.assert_absent(f"the error for {case}", done.stdout + done.stderr)
        assert done.returncode == 1, f"{case}: {done.returncode} {done.stderr}"
        assert done.stderr.startswith("pywg up: "), f"{case}: {done.stderr}"
        assert "Traceback" not in done.stderr, f"{case}: {done.stderr}"
        assert pywg.leftovers() == [], case
        assert not (STATE_DIR / f"{pywg.name}.log").exists(), case


def test_up_help_takes_no_key_and_shows_none() -> None:
    done = run(pywg_argv("up", "--help"))
    assert "CONFIG" in done.stdout.upper() and done.stderr == ""
    keys = Secrets({"private": OWN.private, "psk": PSK})
    keys.assert_absent("`pywg up --help`", done.stdout)
    subcommands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    options = [o for action in subcommands.choices["up"]._actions for o in action.option_strings]
    assert not [o for o in options if "key" in o or "psk" in o], options


# --- the CNI node agent -----------------------------------------------------------------------------


def _files(directory: Path) -> Iterable[Path]:
    return sorted(p for p in directory.iterdir() if not p.is_socket())


@pytest.mark.root
def test_node_agent_keeps_keys_in_its_state_files_only(topology: Topology) -> None:
    node, peer = topology.host("node"), topology.host("peer")
    link(node, peer, [f"{NODE_IP}/24"], [f"{PEER_IP}/24"])
    agent = NodeAgent(node).start()
    pod_host = topology.host("pod")
    pod_keys, peer_keys, psk = KeyPair.generate(), KeyPair.generate(), generate_psk()
    keys = Secrets({"pod-private": pod_keys.private, "psk": psk, "peer-private": peer_keys.private})
    cfg = InterfaceConfig(
        private_key=pod_keys.private,
        addresses=[ip_interface("10.99.0.2/32")],
        peers=[
            PeerConfig(
                public_key=peer_keys.public,
                preshared_key=psk,
                endpoint=EndpointSpec(PEER_IP, 51820),
                allowed_ips=[ip_network("10.99.0.1/32")],
            )
        ],
    )
    WireguardGo(
        peer,
        InterfaceConfig(
            private_key=peer_keys.private,
            addresses=[ip_interface("10.99.0.1/24")],
            listen_port=51820,
            peers=[
                PeerConfig(
                    public_key=pod_keys.public, preshared_key=psk, allowed_ips=[ip_network("10.99.0.2/32")]
                )
            ],
        ),
    ).start()
    ref = {"container_id": secrets.token_hex(32), "ifname": "net1", "netns": netns_path(pod_host)}
    replies: list[dict[str, Any]] = [agent.call("add", **ref, pod="default/pod", config=to_json(cfg))]
    keys.assert_absent("the agent's reply to add", json.dumps(replies[0]))
    assert replies[0]["ok"] is True, replies[0]
    name = replies[0]["name"]
    assert pod_host.ping("10.99.0.1", timeout=10.0)  # a session, with the preshared key

    # Refused adds and a refused CNI ADD, each with the good private key beside a bad value.
    bad_configs = [
        to_json(cfg).replace(peer_keys.public.hex(), pod_keys.private.hex()),
        json.dumps({**json.loads(to_json(cfg)), "peers": [{"publicKey": pod_keys.private.hex()}]}),
        json.dumps({**json.loads(to_json(cfg)), "mtu": base64.b64encode(psk).decode()}),
        to_json(cfg)[:80],
    ]
    for number, text in enumerate(bad_configs):
        other = {**ref, "container_id": secrets.token_hex(32)}
        reply = agent.call("add", **other, pod=f"default/bad{number}", config=text)
        assert reply["ok"] is False, f"bad config {number} was accepted"
        replies.append(reply)
    network = {
        "cniVersion": "1.1.0",
        "name": "wgnet",
        "type": "pywg-cni",
        "wireguard": {**json.loads(to_json(cfg)), "listenPort": pod_keys.private.hex()},
    }
    env = {
        "CNI_COMMAND": "ADD",
        "CNI_CONTAINERID": secrets.token_hex(32),
        "CNI_NETNS": netns_path(pod_host),
        "CNI_IFNAME": "net2",
        "CNI_PATH": "/opt/cni/bin",
    }
    cni = agent.call("cni", env=env, stdin=json.dumps(network))
    keys.assert_absent("the agent's reply to cni", json.dumps(cni))
    assert cni["ok"] is True and cni["status"] == 1 and "listenPort" in cni["stdout"], cni
    replies += [cni, agent.call("status"), agent.call("list"), agent.call("check", **ref)]
    for number, reply in enumerate(replies):
        keys.assert_absent(f"the agent's reply #{number}", json.dumps(reply))

    # Processes: the supervisor and its worker.
    assert agent.process is not None
    supervisor, worker = agent.process.pid, agent.worker_pid()
    assert worker != supervisor
    assert_process_clean(keys, supervisor, "the agent's supervisor")
    assert_process_clean(keys, worker, "the agent's worker")

    # Files: root only; the state file is the one place the key is.
    assert_mode(agent.socket, 0o600, stat.S_IFSOCK)
    assert_mode(agent.socket.parent, 0o700, stat.S_IFDIR)
    assert_mode(agent.state_dir, 0o700, stat.S_IFDIR)
    state_file = agent.state_dir / f"{name}.json"
    for path in _files(agent.state_dir):
        if path == state_file:
            assert_mode(path, 0o600)
            found = keys.found_in(path.read_bytes())
            assert "pod-private/base64" in found and "psk/base64" in found, found
            assert not [f for f in found if f.startswith("peer-private")], found
        else:
            keys.assert_absent(f"{path} in the agent's state dir", path.read_bytes())
    for path in _files(agent.socket.parent):
        keys.assert_absent(f"{path} beside the agent's socket", path.read_bytes())
    assert_mode(socket_path(name), 0o700, stat.S_IFSOCK)
    assert_nobody_cannot_use_uapi(name)
    assert_nobody_cannot_read(state_file)
    connect = f"import socket; socket.socket(socket.AF_UNIX).connect({str(agent.socket)!r})"
    done = run([*NOBODY, SYSTEM_PYTHON, "-I", "-c", connect], check=False)
    assert done.returncode != 0 and "PermissionError" in done.stderr, done

    # The log, also after del and a stop.
    keys.assert_absent("the agent's log", agent.log())
    assert agent.call("del", **ref)["ok"] is True
    assert not state_file.exists()
    agent.terminate()
    log = agent.log()
    keys.assert_absent("the agent's log", log)
    assert "added" in log and "removed" in log and "refused" in log and "Traceback" not in log


# --- key material in memory -----------------------------------------------------------------------


def test_every_key_buffer_is_zeroed_540_s_after_the_last_handshake() -> None:
    a_at, b_at = ("192.0.2.1", 51820), ("192.0.2.2", 51820)
    net = Network()
    a, b = net.device(a_at, 1), net.device(b_at, 2)
    connect(a, b, a_at, b_at, psk=bytes(range(32)))
    a_to_b, b_to_a = ipv4_packet("10.0.0.1", "10.0.0.2"), ipv4_packet("10.0.0.2", "10.0.0.1")
    send_packet(a, a_to_b)
    net.pump()
    send_packet(b, b_to_a)
    net.pump()
    net.advance(REKEY_AFTER_TIME + 1)  # A rekeys on its next packet: previous and current on both ends
    send_packet(a, a_to_b)
    net.pump()
    send_packet(b, b_to_a)
    net.pump()
    assert net.delivered[b_at] == [a_to_b, a_to_b] and net.delivered[a_at] == [b_to_a, b_to_a]
    peers = [*a.peers.values(), *b.peers.values()]
    keypairs = [k for p in peers for k in p.keypairs.all()]
    assert len(keypairs) == 4  # previous and current on each end
    assert all(any(k.sending_key) and any(k.receiving_key) for k in keypairs)

    net.advance(ZERO_KEY_MATERIAL_AFTER - 2)
    assert all(len(p.keypairs.all()) == 2 for p in peers)  # not yet
    net.advance(3)
    for peer in peers:
        assert peer.keypairs.all() == [], peer
        assert peer.handshake.state is HandshakeState.ZEROED
        assert peer.handshake.symmetric is None and peer.handshake.local_ephemeral is None
    for keypair in keypairs:
        assert not any(keypair.sending_key) and not any(keypair.receiving_key)
        assert not keypair.sending_valid and not keypair.receiving_valid
        batch = a.crypto.packets([bytes(16), a_to_b])
        assert len(keypair.seal_run(batch, 0, 2, 1420)) == 0
        assert len(keypair.session.seal_run(batch, 0, 2, keypair.remote_index, 0, 1420)) == 0
    assert not any(k in a.indices.values() or k in b.indices.values() for k in keypairs)
