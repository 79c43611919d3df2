"""The compiled CNI entrypoint (cni/entrypoint.c), run where there is no Python.

The binary is built once for the module. Each call runs it as `chroot ROOTFS /pywg-cni`, ROOTFS
holding nothing but the binary and /run/pywg-cni, with exactly the variables and stdin Multus gives a
delegate: the CNI_* variables and the network config as Go's encoding/json writes it (sorted keys,
<, > and & escaped). The node agent (`python -m cni.agent --supervise`, in a `node` namespace) binds
its socket at ROOTFS/run/pywg-cni/agent.sock, which the binary inside the chroot reaches at the
default path. A fake agent, a socket served by this process, holds the request and reply encoding
to Python's json. The Pod sandboxes are namespaces; the WireGuard peer is wireguard-go in `peer`.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from ipaddress import ip_interface, ip_network
from pathlib import Path
from typing import Any

import pytest

from cni import agent, agent_client, plugin, policy
from cni.build_entrypoint import SOURCE, build
from cni.spec import (
    DECODING_FAILURE,
    INCOMPATIBLE_VERSION,
    INTERNAL,
    INVALID_ENVIRONMENT,
    INVALID_NETWORK_CONFIG,
    NOT_AVAILABLE,
    SUPPORTED_VERSIONS,
    TRY_AGAIN_LATER,
    UNSUPPORTED_FIELD,
)
from pywg.config import EndpointSpec, InterfaceConfig, PeerConfig, to_json
from pywg.runtime.uapi_server import socket_path
from tests.support.cni_run import NodeAgent
from tests.support.topology import (
    NETNS_DIR,
    OWNER,
    OWNER_ENV,
    Host,
    KeyPair,
    Topology,
    WireguardGo,
    link,
    stop_process,
)

pytest_plugins = ["tests.support.topology"]

pytestmark = pytest.mark.root

CHROOT = shutil.which("chroot") or "/usr/sbin/chroot"
NODE_IP, PEER_IP = "192.168.78.1", "192.168.78.2"
PEER_PORT = 51820
AGENT_DOWN = "the pywg node agent is not running on this node"
TIMING_CYCLES = 10
PARALLEL_PODS = 4


# --- running the binary ---------------------------------------------------------------------------


@dataclass
class Call:
    status: int
    stdout: bytes
    stderr: bytes
    seconds: float

    def json(self) -> Any:
        return json.loads(self.stdout)


def invoke(rootfs: Path, env: dict[str, str], stdin: bytes, timeout: float = 100.0) -> Call:
    """`chroot ROOTFS /pywg-cni` with exactly `env` and `stdin`."""
    started = time.monotonic()
    done = subprocess.run(
        [CHROOT, str(rootfs), "/pywg-cni"],
        input=stdin,
        capture_output=True,
        env=env,
        timeout=timeout,
        check=False,
    )
    return Call(done.returncode, done.stdout, done.stderr, time.monotonic() - started)


def multus_env(command: str, container_id: str = "", netns: str = "", pod: str = "pod-a") -> dict[str, str]:
    """The variables Multus (through libcni) sets for a delegate; nothing else."""
    cid = container_id or uuid.uuid4().hex * 2
    args = (
        f"IgnoreUnknown=true;K8S_POD_NAMESPACE=default;K8S_POD_NAME={pod};"
        f"K8S_POD_INFRA_CONTAINER_ID={cid};K8S_POD_UID={uuid.uuid4()}"
    )
    return {
        "CNI_COMMAND": command,
        "CNI_CONTAINERID": cid,
        "CNI_NETNS": netns,
        "CNI_IFNAME": "net1",
        "CNI_ARGS": args,
        "CNI_PATH": "/opt/cni/bin",
    }


def go_json(value: Any) -> bytes:
    """`value` as Go's encoding/json marshals a map: sorted keys, no spaces, <>&\u2028\u2029 escaped."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    for char, escape in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026")):
        text = text.replace(char, escape)
    return text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029").encode()


def in_process(env: dict[str, str], stdin: bytes) -> tuple[int, bytes]:
    """What cni/plugin.py prints for a request that never reaches an agent (one that would fails)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(agent_client, "ensure_agent", _no_agent)
        patch.setattr(agent_client, "call", _no_agent)
        status, output = plugin.run(env, stdin)
    return status, b"" if output is None else (json.dumps(output) + "\n").encode()


def _no_agent(*args: object, **kwargs: object) -> Any:
    raise AssertionError("this request must not reach an agent")


def assert_cni_error(call: Call, code: int, version: str, *fragments: str) -> dict[str, Any]:
    assert call.status == 1, call
    error = call.json()
    assert set(error) == {"cniVersion", "code", "msg"}, error
    assert error["code"] == code and error["cniVersion"] == version, error
    for fragment in fragments:
        assert fragment in error["msg"], error
    return error


# --- the binary and a root filesystem without Python -----------------------------------------------


@pytest.fixture(scope="module")
def entrypoint() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix=f"pywgt-{OWNER}-") as directory:
        binary = Path(directory) / "pywg-cni"
        diagnostics = build(binary)
        assert diagnostics == "", f"gcc warned:\n{diagnostics}"
        yield binary


def make_rootfs(binary: Path, parent: Path) -> Path:
    root = parent / "rootfs"
    root.mkdir(mode=0o755)
    shutil.copy2(binary, root / "pywg-cni")
    (root / "run" / "pywg-cni").mkdir(mode=0o700, parents=True)
    return root


@pytest.fixture
def rootfs(entrypoint: Path) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix=f"pywgt-{OWNER}-") as directory:
        yield make_rootfs(entrypoint, Path(directory))


def _program_headers(path: Path) -> list[int]:
    """The p_type of every program header of a 64-bit little-endian ELF file."""
    data = path.read_bytes()
    assert data[:4] == b"\x7fELF" and data[4] == 2 and data[5] == 1, "not a 64-bit little-endian ELF"
    (phoff,) = struct.unpack_from("<Q", data, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    return [struct.unpack_from("<I", data, phoff + i * phentsize)[0] for i in range(phnum)]


def test_static_binary_runs_alone(rootfs: Path) -> None:
    pt_interp, pt_dynamic = 3, 2
    headers = _program_headers(rootfs / "pywg-cni")
    assert pt_interp not in headers and pt_dynamic not in headers, "the entrypoint is dynamically linked"
    assert sorted(str(p.relative_to(rootfs)) for p in rootfs.rglob("*")) == [
        "pywg-cni",
        "run",
        "run/pywg-cni",
    ]
    no_python = subprocess.run(
        [CHROOT, str(rootfs), "/usr/bin/python3", "-c", "pass"], capture_output=True, check=False
    )
    assert no_python.returncode == 127, no_python

    # The C constants that must agree with the Python ones.
    source = SOURCE.read_text()
    found = re.search(r"#define MAX_REQUEST \(1 << (\d+)\)", source)
    assert found is not None and 1 << int(found.group(1)) == agent.MAX_REQUEST
    assert f'"{policy.DEFAULT_SOCKET}"' in source and policy.DEFAULT_SOCKET == agent_client.DEFAULT_SOCKET


# --- no agent --------------------------------------------------------------------------------------


@pytest.mark.parametrize("stale", [False, True], ids=["no-socket", "stale-socket"])
def test_without_an_agent(rootfs: Path, stale: bool) -> None:
    sock = rootfs / "run/pywg-cni/agent.sock"
    reason = "No such file or directory"
    if stale:  # an agent that died: the socket file stays, nothing accepts
        with socket.socket(socket.AF_UNIX) as dead:
            dead.bind(str(sock))
        reason = "Connection refused"

    # VERSION: answered by the binary itself, as the plugin answers it.
    for stdin in (b'{"cniVersion": "1.0.0"}', b'{"cniVersion":"0.4.0","name":"x"}', b"", b"  {}\n"):
        env = {"CNI_COMMAND": "VERSION"}
        call = invoke(rootfs, env, stdin)
        assert (call.status, call.stdout) == in_process(env, stdin), stdin
    answer = invoke(rootfs, {"CNI_COMMAND": "VERSION"}, b'{"cniVersion": "1.1.0"}').json()
    assert answer["supportedVersions"] == list(SUPPORTED_VERSIONS)
    bad = invoke(rootfs, {"CNI_COMMAND": "VERSION"}, b"{not json")
    assert_cni_error(bad, DECODING_FAILURE, "1.1.0", "not a JSON object")

    config = go_json({"cniVersion": "0.4.0", "name": "wg-net", "type": "pywg-cni"})
    socket_text = "socket /run/pywg-cni/agent.sock"
    add = invoke(rootfs, multus_env("ADD", netns="/run/netns/x"), config)
    error = assert_cni_error(add, TRY_AGAIN_LATER, "0.4.0", AGENT_DOWN, socket_text, reason, "DaemonSet")
    assert error["msg"] == (
        f"pywg-cni: {AGENT_DOWN} (socket /run/pywg-cni/agent.sock: {reason}): is the pywg DaemonSet ready?"
    )
    no_version = invoke(rootfs, multus_env("ADD", netns="/run/netns/x"), b'{"name": "wg-net"}')
    assert_cni_error(no_version, TRY_AGAIN_LATER, "1.1.0", AGENT_DOWN)
    check = invoke(rootfs, multus_env("CHECK", netns="/run/netns/x"), config)
    assert_cni_error(check, TRY_AGAIN_LATER, "0.4.0", AGENT_DOWN)
    status = invoke(rootfs, {"CNI_COMMAND": "STATUS", "CNI_PATH": "/opt/cni/bin"}, config)
    assert_cni_error(status, NOT_AVAILABLE, "0.4.0", AGENT_DOWN)

    # DEL and GC: nothing of ours runs, so there is nothing to remove.
    for env in (multus_env("DEL", netns="/run/netns/x"), multus_env("DEL"), {"CNI_COMMAND": "GC"}):
        call = invoke(rootfs, env, config)
        assert (call.status, call.stdout) == (0, b""), call


# --- a fake agent: the encoding on the wire -----------------------------------------------------------


class FakeAgent:
    """Serves `sock` from a thread: records each request line, answers with `reply(line)`."""

    def __init__(self, sock: Path) -> None:
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(sock))
        self.listener.listen(16)
        self.listener.settimeout(0.2)
        self.requests: list[bytes] = []
        self.reply: Callable[[bytes], bytes] = lambda line: b'{"ok": true, "status": 0, "stdout": ""}\n'
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(10)
                data = b""
                with contextlib.suppress(OSError):
                    while b"\n" not in data:
                        chunk = conn.recv(1 << 16)
                        if not chunk:
                            break
                        data += chunk
                    line = data.split(b"\n", 1)[0]
                    self.requests.append(line)
                    conn.sendall(self.reply(line))

    def last(self) -> dict[str, Any]:
        return json.loads(self.requests[-1])

    def close(self) -> None:
        self.stopping.set()
        self.thread.join(5)
        self.listener.close()


@pytest.fixture
def fake(rootfs: Path) -> Iterator[FakeAgent]:
    server = FakeAgent(rootfs / "run/pywg-cni/agent.sock")
    try:
        yield server
    finally:
        server.close()


_STDIN_PIECES = [
    b"a",
    b"{}",
    b"/",
    b'"',
    b"\\",
    b"\\u0041",
    b"\x00",
    b"\x01",
    b"\x1f",
    b"\x7f",
    b"\n",
    b"\t",
    b"\r",
    "é".encode(),
    "€".encode(),
    "😀".encode(),
    "\u2028".encode(),
    "\ufeff".encode(),
    b"\xff",
    b"\x80",
    b"\xc3",  # a truncated sequence
    b"\xc0\xaf",  # overlong
    b"\xe0\x80\x80",  # overlong
    b"\xed\xa0\x80",  # an encoded surrogate
    b"\xf4\x90\x80\x80",  # above U+10FFFF
    b"\xf0\x9f\x98",  # truncated
]


def test_request_carries_stdin_and_the_cni_variables_exactly(rootfs: Path, fake: FakeAgent) -> None:
    env = multus_env("ADD", netns="/run/netns/pod")
    env["CNI_NETNS_OVERRIDE"] = "1"
    env["CNI_ARGS"] += ';X=he said "ü\\"'
    outside = {"PATH": "/usr/bin", "HOME": "/root", "CNI_OTHER": "not sent"}
    randomness = random.Random(7)
    cases = [b"", b'{"cniVersion": "1.0.0"}', 'ünïcödé 😀 "quoted" back\\slash'.encode(), bytes(range(256))]
    cases += [b"".join(randomness.choices(_STDIN_PIECES, k=randomness.randrange(40))) for _ in range(150)]
    for stdin in cases:
        call = invoke(rootfs, env | outside, stdin)
        assert (call.status, call.stdout) == (0, b""), (stdin, call)
        line = fake.requests[-1]
        line.decode("utf-8")  # strict: the line itself is UTF-8
        request = json.loads(line)
        assert request == {"op": "cni", "env": env, "stdin": stdin.decode("utf-8", "surrogateescape")}
        assert request["stdin"].encode("utf-8", "surrogateescape") == stdin
    assert len(fake.requests) == len(cases)


_REPLY_CHARS = ["a", "\\", '"', "/", "\n", "\x00", "\x1f", "é", "€", "😀", "\u2028", "\uffff"]
_SURROGATES = ["\udc80", "\udcff", "\udc00", "\ud800", "\udfff", "\ud83d", "\ude00"]


def _printed(text: str) -> bytes:
    """The bytes the entrypoint prints for a decoded reply string (the inverse of surrogateescape;
    another lone surrogate is U+FFFD)."""
    out = []
    for char in text:
        if 0xDC80 <= ord(char) <= 0xDCFF:
            out.append(bytes([ord(char) - 0xDC00]))
        elif 0xD800 <= ord(char) <= 0xDFFF:
            out.append("\ufffd".encode())
        else:
            out.append(char.encode())
    return b"".join(out)


def test_replies_are_decoded_as_python_encodes_them(rootfs: Path, fake: FakeAgent) -> None:
    randomness = random.Random(11)
    env = multus_env("ADD", netns="/run/netns/pod")
    for i in range(120):
        plain = i % 2 == 0
        chars = _REPLY_CHARS if plain else _REPLY_CHARS + _SURROGATES
        text = "".join(randomness.choices(chars, k=randomness.randrange(30)))
        status = randomness.randrange(256)
        reply = json.dumps({"ok": True, "status": status, "stdout": text}, ensure_ascii=not plain)
        fake.reply = lambda line, reply=reply: reply.encode("utf-8", "surrogatepass") + b"\n"
        call = invoke(rootfs, env, b"{}")
        assert (call.status, call.stdout) == (status, _printed(json.loads(reply)["stdout"])), reply

    odd_but_good = {
        b'{"extra": {"a": [1, -2.5e3, null, true, false, "x\\"]"], "b": {}}, "ok": true, "status": 3, '
        b'"stdout": "hi", "more": []}': (3, b"hi"),
        b'{"ok": false, "ok": true, "status": 9, "status": 4, "stdout": "a", "stdout": "b"}': (4, b"b"),
        b' \t{"status": 0, "ok": true} \r': (0, b""),
        b'{"x": ' + b"[" * 40 + b"]" * 40 + b', "ok": true, "status": 1, "stdout": "\\/"}': (1, b"/"),
        b'{"x": NaN, "y": -Infinity, "ok": true, "status": 0, "stdout": "\\u00e9\\ud83d\\ude00"}': (
            0,
            "é😀".encode(),
        ),
    }
    for reply, expected in odd_but_good.items():
        fake.reply = lambda line, reply=reply: reply + b"\n"
        call = invoke(rootfs, env, b"{}")
        assert (call.status, call.stdout) == expected, reply

    # The agent refused: its code and message as a CNI error, the config's version.
    refusal = {"ok": False, "code": 7, "msg": 'bad "thing" \\ é 😀 \udcff\n'}
    fake.reply = lambda line: json.dumps(refusal).encode() + b"\n"
    call = invoke(rootfs, env, b'{"cniVersion": "0.3.1"}')
    error = assert_cni_error(call, 7, "0.3.1")
    # (the escaped byte is a byte again inside the entrypoint, and escaped the same way in its output)
    assert error["msg"] == 'pywg-cni: the pywg node agent refused the request: bad "thing" \\ é 😀 \udcff\n'
    fake.reply = lambda line: b'{"ok": false}\n'
    assert_cni_error(invoke(rootfs, env, b"{}"), INTERNAL, "1.1.0", "refused the request: (no reason given)")


GARBAGE = {
    "not JSON": b"not json\n",
    "no status": b'{"ok": true}\n',
    "status 256": b'{"ok": true, "status": 256, "stdout": ""}\n',
    "status -1": b'{"ok": true, "status": -1, "stdout": ""}\n',
    "status a string": b'{"ok": true, "status": "0", "stdout": ""}\n',
    "status a float": b'{"ok": true, "status": 0.0, "stdout": ""}\n',
    "ok a string": b'{"ok": "yes", "status": 0}\n',
    "an array": b"[1, 2]\n",
    "trailing data": b'{"ok": true, "status": 0} {}\n',
    "unterminated string": b'{"ok": true, "status": 0, "stdout": "abc}\n',
    "bad escape": b'{"ok": true, "status": 0, "stdout": "\\x"}\n',
    "bad hex": b'{"ok": true, "status": 0, "stdout": "\\u12g4"}\n',
    "raw control character": b'{"ok": true, "status": 0, "stdout": "a\x01b"}\n',
    "too deep": b'{"x": ' + b"[" * 100 + b"]" * 100 + b', "ok": true, "status": 0}\n',
    "closed without reply": b"",
    "no newline": b'{"ok": true, "status": 0, "stdout": "x"}',
    "too long": b'{"ok": true, "status": 0, "stdout": "' + b"x" * (4 << 20),
}


@pytest.mark.parametrize("name", list(GARBAGE))
def test_garbage_replies_are_a_try_again_error(rootfs: Path, fake: FakeAgent, name: str) -> None:
    fake.reply = lambda line: GARBAGE[name]
    for command in ("ADD", "DEL"):
        call = invoke(rootfs, multus_env(command, netns="/run/netns/pod"), b'{"cniVersion": "1.0.0"}')
        assert_cni_error(
            call, TRY_AGAIN_LATER, "1.0.0", "the pywg node agent (socket /run/pywg-cni/agent.sock)"
        )
    version = invoke(rootfs, {"CNI_COMMAND": "VERSION"}, b'{"cniVersion": "1.0.0"}')
    assert version.status == 0 and version.json()["supportedVersions"] == list(SUPPORTED_VERSIONS)


MAX_STDIN = 1 << 20  # cni/entrypoint.c


def test_size_limits(rootfs: Path, fake: FakeAgent) -> None:
    env = multus_env("ADD", netns="/run/netns/pod")
    # The largest stdin, each byte escaped to six ("\\u0001"), still fits the agent's request line:
    # a Secret-sized config is never "try again later".
    largest = b"\x01" * MAX_STDIN
    call = invoke(rootfs, env, largest)
    assert (call.status, call.stdout) == (0, b""), call
    assert fake.last()["stdin"] == largest.decode()
    calls = len(fake.requests)
    # With the CNI variables as long as a variable may be, the line would pass the agent's limit.
    variable = "\x01" * (128 * 1024 - 32)
    too_long = invoke(
        rootfs, env | {"CNI_ARGS": variable, "CNI_PATH": variable, "CNI_NETNS": variable}, largest
    )
    assert_cni_error(too_long, INVALID_NETWORK_CONFIG, "1.1.0", "longer than the node agent reads")
    too_big = invoke(rootfs, env, b'{"cniVersion": "1.0.0", "x": "' + b"a" * MAX_STDIN + b'"}')
    assert_cni_error(too_big, INVALID_NETWORK_CONFIG, "1.1.0", f"larger than {MAX_STDIN} bytes")
    assert len(fake.requests) == calls  # neither reached the agent


def test_only_a_root_agent_is_asked(rootfs: Path) -> None:
    """A socket served by anyone but root (a tenant's, say) is not the agent: its answer could forge
    a result. SO_PEERCRED decides, in the entrypoint and in the Python client alike."""
    sock = rootfs / "tenant" / "agent.sock"
    sock.parent.mkdir(exist_ok=True)
    # Bound here, listened on by a process of uid 65534: SO_PEERCRED names who called listen().
    bound = socket.socket(socket.AF_UNIX)
    bound.bind(str(sock))
    forger = (
        "import socket, sys\n"
        "s = socket.socket(fileno=int(sys.argv[1])); s.listen(8); print('ready', flush=True)\n"
        "while True:\n"
        "    c, _ = s.accept()\n"
        "    try:\n"
        "        c.recv(1 << 20)\n"
        '        c.sendall(b\'{"ok": true, "status": 0, "stdout": "forged\\\\n"}\\n\')\n'
        "    except OSError:\n"
        "        pass\n"
        "    c.close()\n"
    )
    nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    process = subprocess.Popen(
        [*nobody, sys.executable, "-c", forger, str(bound.fileno())],
        stdout=subprocess.PIPE,
        cwd="/",
        pass_fds=[bound.fileno()],
    )
    bound.close()
    try:
        assert process.stdout is not None and process.stdout.readline() == b"ready\n"
        env = multus_env("ADD", netns="/run/netns/pod") | {"PYWG_CNI_AGENT_SOCKET": "/tenant/agent.sock"}
        call = invoke(rootfs, env, b'{"cniVersion": "1.0.0"}')
        assert_cni_error(call, INTERNAL, "1.0.0", "/tenant/agent.sock is served by uid 65534, not by root")
        with pytest.raises(agent_client.AgentError, match="served by uid 65534, not by root"):
            agent_client.call("status", socket_path=sock, timeout=5.0)
    finally:
        process.kill()
        process.wait()


# --- the real agent ------------------------------------------------------------------------------------


@dataclass
class Pod:
    host: Host
    keys: KeyPair
    config: InterfaceConfig
    container_id: str = field(default_factory=lambda: uuid.uuid4().hex * 2)

    @property
    def netns(self) -> str:
        return str(NETNS_DIR / self.host.name)

    def env(self, command: str, netns: bool = True) -> dict[str, str]:
        return multus_env(command, self.container_id, self.netns if netns else "", self.host.label)

    def netconf(self, version: str = "1.0.0", **extra: Any) -> dict[str, Any]:
        """A NetworkAttachmentDefinition config with the Pod's WireGuard config inline."""
        conf = {"cniVersion": version, "name": "wg-net", "type": "pywg-cni"}
        return conf | {"wireguard": json.loads(to_json(self.config))} | extra


@dataclass
class Lab:
    topology: Topology
    node: Host
    peer: Host
    agent: NodeAgent
    rootfs: Path
    peer_keys: KeyPair = field(default_factory=KeyPair.generate)
    wg: WireguardGo | None = None

    def pod(self, label: str, address: str) -> Pod:
        keys = KeyPair.generate()
        cfg = InterfaceConfig(
            private_key=keys.private,
            addresses=[ip_interface(address)],
            peers=[
                PeerConfig(
                    public_key=self.peer_keys.public,
                    endpoint=EndpointSpec(PEER_IP, PEER_PORT),
                    allowed_ips=[ip_network("10.99.0.1/32")],
                )
            ],
        )
        return Pod(self.topology.host(label), keys, cfg)

    def serve_peer(self, pod: Pod) -> None:
        cfg = InterfaceConfig(
            private_key=self.peer_keys.private,
            addresses=[ip_interface("10.99.0.1/24")],
            listen_port=PEER_PORT,
            peers=[
                PeerConfig(
                    public_key=pod.keys.public,
                    allowed_ips=[ip_network(f"{a.ip}/32") for a in pod.config.addresses],
                )
            ],
        )
        self.wg = WireguardGo(self.peer, cfg).start()

    def cni(self, env: dict[str, str], conf: dict[str, Any] | bytes) -> Call:
        return invoke(self.rootfs, env, conf if isinstance(conf, bytes) else go_json(conf))


def other_agents(ours: Path) -> list[str]:
    """Command lines of node agents this session runs that do not serve `ours`."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            environ = (proc / "environ").read_bytes().split(b"\0")
            argv = (proc / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if f"{OWNER_ENV}={OWNER}".encode() in environ and "cni.agent" in argv and str(ours) not in argv:
            found.append(" ".join(argv))
    return found


@pytest.fixture(scope="module")
def lab(entrypoint: Path) -> Iterator[Lab]:
    with Topology() as world:
        node, peer = world.host("node"), world.host("peer")
        link(node, peer, [f"{NODE_IP}/24"], [f"{PEER_IP}/24"])
        rootfs = make_rootfs(entrypoint, node.tmpdir)
        sock = rootfs / "run/pywg-cni/agent.sock"
        yield Lab(world, node, peer, NodeAgent(node, sock).start(), rootfs)
        # The plugin inside the agent calls that agent, and never starts another one.
        assert other_agents(sock) == []


@pytest.fixture
def clean(lab: Lab) -> Iterator[Lab]:
    try:
        yield lab
    finally:
        if lab.agent.process is None:
            lab.agent.start()
        for name in lab.agent.delete_all():
            assert not socket_path(name).exists(), socket_path(name)


def test_add_ping_check_del_through_the_entrypoint(clean: Lab) -> None:
    lab = clean
    pod = lab.pod("pod-a", "10.99.0.2/32")
    lab.serve_peer(pod)
    conf = pod.netconf(name="wg-net ünï <&>")

    add = lab.cni(pod.env("ADD"), conf)
    assert add.status == 0 and add.stderr == b"", add
    result = add.json()
    assert result == {
        "cniVersion": "1.0.0",
        "interfaces": [{"name": "net1", "sandbox": pod.netns}],
        "ips": [{"address": "10.99.0.2/32", "interface": 0}],
        "routes": [{"dst": "10.99.0.1/32"}],
        "dns": {},
    }
    assert "inet 10.99.0.2/32" in pod.host.ip("addr", "show", "dev", "net1")
    assert pod.host.ping("10.99.0.1", timeout=10)
    [att] = lab.agent.attachments()
    assert (att["container_id"], att["pod"]) == (pod.container_id, "default/pod-a")

    check = lab.cni(pod.env("CHECK"), conf | {"prevResult": result})
    assert (check.status, check.stdout) == (0, b""), check

    delete = lab.cni(pod.env("DEL"), conf | {"prevResult": result})
    assert (delete.status, delete.stdout) == (0, b""), delete
    assert not pod.host.has_link("net1") and lab.agent.attachments() == []
    again = lab.cni(pod.env("DEL", netns=False), conf | {"prevResult": result})
    assert (again.status, again.stdout) == (0, b""), again

    # CHECK after DEL: the plugin's own error, through the agent.
    gone = lab.cni(pod.env("CHECK"), conf | {"prevResult": result})
    assert_cni_error(gone, INVALID_NETWORK_CONFIG, "1.0.0", "has no net1")


def test_plugin_errors_come_back_exactly(clean: Lab) -> None:
    lab = clean
    pod = lab.pod("pod-e", "10.99.0.5/32")
    odd = 'he said "hi" \\ back\\slash ünïcödé 😀 \u2028 <&> \x01\t'
    env = pod.env("ADD")
    no_container = {k: v for k, v in env.items() if k != "CNI_CONTAINERID"}
    cases: list[tuple[dict[str, str], bytes, int]] = [
        (env, go_json(pod.netconf(mode=odd)), UNSUPPORTED_FIELD),
        (env, go_json(pod.netconf(wireguard={"privateKey": odd, "peers": []})), INVALID_NETWORK_CONFIG),
        (env, go_json(pod.netconf(wireguard="not an object")), INVALID_NETWORK_CONFIG),
        (env, go_json(pod.netconf(version=odd)), INCOMPATIBLE_VERSION),
        (env, b'{"cniVersion": "1.0.0", "name": "\xff\xfe"}', DECODING_FAILURE),
        (env, b'{"cniVersion": "1.0.0", "name": "a\x01b"}', DECODING_FAILURE),
        (env, b'{"cniVersion": "1.0.0"}\x00', DECODING_FAILURE),
        (env, b"[1, 2]", DECODING_FAILURE),
        (no_container, go_json(pod.netconf()), INVALID_ENVIRONMENT),
    ]
    for case_env, stdin, code in cases:
        call = lab.cni(case_env, stdin)
        assert (call.status, call.stdout) == in_process(case_env, stdin), stdin
        assert call.json()["code"] == code, call
    assert lab.agent.attachments() == []

    # VERSION from the agent is the one the binary gives alone; STATUS is ready.
    for stdin in (b'{"cniVersion": "0.3.1"}', b""):
        call = lab.cni({"CNI_COMMAND": "VERSION"}, stdin)
        assert (call.status, call.stdout) == in_process({"CNI_COMMAND": "VERSION"}, stdin)
    status = lab.cni({"CNI_COMMAND": "STATUS", "CNI_PATH": "/opt/cni/bin"}, go_json(pod.netconf()))
    assert (status.status, status.stdout) == (0, b""), status


def test_the_socket_is_the_operators_never_the_configs(clean: Lab) -> None:
    """$PYWG_CNI_AGENT_SOCKET (the runtime's environment) or the default; a network config's
    agentSocket reaches no socket, and the plugin refuses it unless it names the agent's own."""
    lab = clean
    alternative = lab.rootfs / "alt"
    alternative.mkdir(exist_ok=True)
    link_path = alternative / "agent.sock"
    if not link_path.is_symlink():
        link_path.symlink_to("/run/pywg-cni/agent.sock")  # resolved inside the chroot
    status_env = {"CNI_COMMAND": "STATUS", "CNI_PATH": "/opt/cni/bin"}
    conf = {"cniVersion": "1.1.0", "name": "wg-net", "type": "pywg-cni"}
    for extra in ({}, {"PYWG_CNI_AGENT_SOCKET": "/alt/agent.sock"}, {"PYWG_CNI_AGENT_SOCKET": ""}):
        call = lab.cni(status_env | extra, conf)
        assert (call.status, call.stdout) == (0, b""), (extra, call)
    for path in ("/nowhere.sock", "/alt/agent.sock"):
        call = lab.cni(status_env, conf | {"agentSocket": path})
        assert_cni_error(call, INVALID_NETWORK_CONFIG, "1.1.0", "agentSocket: a network config cannot choose")
    own = conf | {"agentSocket": str(lab.agent.socket)}
    assert lab.cni(status_env, own).status == 0
    missing = lab.cni(
        status_env | {"PYWG_CNI_AGENT_SOCKET": "/nowhere.sock"}, conf | {"agentSocket": "/alt/agent.sock"}
    )
    assert_cni_error(missing, NOT_AVAILABLE, "1.1.0", AGENT_DOWN, "socket /nowhere.sock")


def test_parallel_adds_for_different_pods(clean: Lab) -> None:
    lab = clean
    pods = [lab.pod(f"pod-p{i}", f"10.99.1.{i + 2}/32") for i in range(PARALLEL_PODS)]
    started = time.monotonic()
    processes = [
        subprocess.Popen(
            [CHROOT, str(lab.rootfs), "/pywg-cni"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=pod.env("ADD"),
        )
        for pod in pods
    ]
    try:
        outputs = [
            p.communicate(go_json(pod.netconf()), timeout=100) for p, pod in zip(processes, pods, strict=True)
        ]
    finally:
        for process in processes:
            stop_process(process)
    took = time.monotonic() - started
    for process, (out, err), pod in zip(processes, outputs, pods, strict=True):
        assert process.returncode == 0, (out, err)
        assert json.loads(out)["ips"] == [{"address": str(pod.config.addresses[0]), "interface": 0}]
        assert pod.host.has_link("net1")
    assert len(lab.agent.attachments()) == PARALLEL_PODS
    print(f"\n{PARALLEL_PODS} parallel ADDs through the entrypoint took {took * 1000:.0f} ms")
    for pod in pods:
        delete = lab.cni(pod.env("DEL"), pod.netconf())
        assert (delete.status, delete.stdout) == (0, b""), delete


def test_add_del_timing(clean: Lab) -> None:
    lab = clean
    pod = lab.pod("pod-t", "10.99.0.9/32")
    adds, dels = [], []
    for _ in range(TIMING_CYCLES):
        pod.container_id = uuid.uuid4().hex * 2
        add = lab.cni(pod.env("ADD"), pod.netconf())
        assert add.status == 0, add
        delete = lab.cni(pod.env("DEL"), pod.netconf() | {"prevResult": add.json()})
        assert (delete.status, delete.stdout) == (0, b""), delete
        adds.append(add.seconds)
        dels.append(delete.seconds)
    assert lab.agent.attachments() == [] and not pod.host.has_link("net1")
    print(
        f"\n{TIMING_CYCLES} ADD/DEL cycles through the entrypoint: ADD p50 "
        f"{statistics.median(adds) * 1000:.1f} ms (min {min(adds) * 1000:.1f}, max {max(adds) * 1000:.1f}), "
        f"DEL p50 {statistics.median(dels) * 1000:.1f} ms"
    )


def test_agent_gone_after_adds(clean: Lab) -> None:
    """Last of the agent tests: the agent stops (its DaemonSet is gone); DEL still succeeds and the
    next agent removes what the Pod left once its namespace is gone."""
    lab = clean
    pod = lab.pod("pod-g", "10.99.0.7/32")
    add = lab.cni(pod.env("ADD"), pod.netconf())
    assert add.status == 0, add
    lab.agent.terminate()
    assert pod.host.has_link("net1")  # SIGTERM keeps the links for the next agent
    other = lab.pod("pod-late", "10.99.0.8/32")
    late = lab.cni(other.env("ADD"), other.netconf())
    assert_cni_error(late, TRY_AGAIN_LATER, "1.0.0", AGENT_DOWN)
    delete = lab.cni(pod.env("DEL"), pod.netconf() | {"prevResult": add.json()})
    assert (delete.status, delete.stdout) == (0, b""), delete
    pod.host.close()  # the runtime deletes the sandbox after a successful DEL
    lab.agent.start()
    assert lab.agent.attachments() == []
    assert list((lab.node.tmpdir / "state").glob("cni*.json")) == []
    assert os.path.exists(lab.agent.socket)
