"""A small world of network namespaces for end-to-end tests: hosts, veth links, wireguard-go, traffic.

A `Host` is a network namespace (`ip netns add pywgt-<owner>-<random>`, `lo` up) with its own 0700
temporary directory: a `Namespace` of pywg/runtime/lab.py (what the demo's and the benchmarks'
two-namespace lab is made of) with what tests need besides. `link` joins two hosts with a veth pair
carrying IPv4 and/or IPv6 underlay addresses; `Link.set_addresses` moves one end to new addresses
(roaming) and `Link.down`/`Link.up` cut and restore it. `WireguardGo` runs Debian's wireguard-go for
one interface inside a host and configures it with `wg setconf` (from a 0600 file, never argv or
environment) and `ip`.
`tcp_transfer` and `iperf3` push traffic between hosts, always with a time bound.

Ownership and cleanup. Every name this module makes carries the owner tag of the pytest process
(`<pid>-<start time>`): namespaces `pywgt-<owner>-<hex>`, temporary directories
`/tmp/pywgt-<owner>-*`, and every process started in a host gets `PYWGT_OWNER=<owner>` in its
environment. `Host.close` stops the host's processes (and anything else still in the namespace),
deletes the namespace (the veth pairs go with it) and the directory; the `topology` fixture closes
every host it made, also when the test fails. The session fixture `topology_sweep` removes what
runs that died without cleaning up left behind (their owner process is gone), so parallel runs never
touch each other's resources, and at the end of the session anything of our own.

wireguard-go's UAPI sockets live in /var/run/wireguard, which is NOT per namespace: interface names
must be unique across everything on the machine. `unique_ifname` makes `wgt` + 8 hex digits.

Use it from a test module with `pytest_plugins = ["tests.support.topology"]` (the fixtures then exist for the
whole session), or list it in a conftest.py's `pytest_plugins`. The module is imported by test modules
before pytest loads it as a plugin, so it opts out of assertion rewriting (PYTEST_DONT_REWRITE) rather
than have pytest warn; its asserts are internal checks only.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import re
import secrets
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from ipaddress import (
    IPv4Interface,
    IPv4Network,
    IPv6Interface,
    IPv6Network,
    ip_address,
    ip_interface,
    ip_network,
)
from pathlib import Path
from typing import Any

import pytest

from pywg.config import EndpointSpec, InterfaceConfig, PeerConfig, format_wg_quick
from pywg.core.keys import (
    decode_key,
    encode_key,
    generate_preshared_key,
    generate_private_key,
    public_key_for,
)
from pywg.runtime.daemon import alive
from pywg.runtime.lab import (
    NETNS_DIR,
    WG_SOCKET_DIR,
    Namespace,
    add_veth,
    remove_netns,
    stop_process,
    tcp_listening,
    write_secret,
)

IPInterface = IPv4Interface | IPv6Interface

NETNS_PREFIX = "pywgt-"
IFNAME_PREFIX = "wgt"
IFNAME_MAX = 15
OWNER_ENV = "PYWGT_OWNER"
DEFAULT_MTU = 1420
WG_PORT = 51820
# A socket nobody accepts on is removed by the sweep only once it is this old, so a wireguard-go of a
# parallel run caught between bind() and listen() is never mistaken for a dead one.
STALE_SOCKET_AGE = 10.0

_TAGGED = re.compile(r"pywgt-(\d+-\d+)-[0-9a-z_]+")
_OUR_SOCKET = re.compile(rf"{IFNAME_PREFIX}[0-9a-f]{{8}}\.sock")


# --- ownership ------------------------------------------------------------------------------------


def _start_time(pid: int) -> int | None:
    """Field 22 of /proc/PID/stat (start time in clock ticks since boot), None if no such process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    return int(stat[stat.rindex(")") + 2 :].split()[19])


def _owner_tag(pid: int) -> str:
    start = _start_time(pid)
    assert start is not None
    return f"{pid}-{start}"


OWNER = _owner_tag(os.getpid())
_session_ifnames: set[str] = set()


def owner_alive(tag: str) -> bool:
    """True while the process that owns tag `<pid>-<start time>` runs (pid reuse does not count)."""
    pid, _, start = tag.partition("-")
    return pid.isdigit() and start.isdigit() and _start_time(int(pid)) == int(start)


def unique_ifname(prefix: str = IFNAME_PREFIX) -> str:
    """A fresh interface name, `prefix` + 8 hex digits, whose UAPI socket does not exist."""
    while True:
        name = f"{prefix}{secrets.token_hex(4)}"
        assert len(name) <= IFNAME_MAX, name
        if not (WG_SOCKET_DIR / f"{name}.sock").exists() and name not in _session_ifnames:
            _session_ifnames.add(name)
            return name


# --- commands -------------------------------------------------------------------------------------


class CommandError(subprocess.CalledProcessError):
    """A command failed; unlike CalledProcessError its message includes the command's stderr."""

    def __str__(self) -> str:
        err = self.stderr if isinstance(self.stderr, str) else (self.stderr or b"").decode(errors="replace")
        return f"{super().__str__()}: {err.strip()}"


def _child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.update(extra or {})
    env[OWNER_ENV] = OWNER
    return env


def run(
    cmd: Sequence[str], check: bool = True, timeout: float = 30.0, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a command in the current namespace; raises CommandError (with stderr) if check fails."""
    done = subprocess.run(
        list(cmd),
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=_child_env(),
        check=False,
    )
    if check and done.returncode != 0:
        raise CommandError(done.returncode, done.args, done.stdout, done.stderr)
    return done


def ipv6_loopback() -> bool:
    """Whether this host has IPv6 on loopback (tests of both families skip IPv6 without it)."""
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


def wait_until(predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.05) -> None:
    """Poll `predicate` until it is true; AssertionError naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def _close_all(closers: Iterable[Callable[[], object]]) -> None:
    """Call every closer even if some raise; then raise the first error."""
    errors: list[BaseException] = []
    for close in closers:
        try:
            close()
        except BaseException as exc:  # cleanup goes on; the first error is raised below
            errors.append(exc)
    if errors:
        raise errors[0]


def _as_interface(address: str | IPInterface) -> IPInterface:
    if isinstance(address, str) and "/" not in address:
        raise ValueError(f"address {address!r} needs a prefix length (10.0.0.1/24, fd00::1/64)")
    return ip_interface(address)


# --- hosts ----------------------------------------------------------------------------------------


class Host(Namespace):
    """A network namespace `pywgt-<owner>-<hex>` with `lo` up and a private 0700 directory.

    IPv6 addresses keep across link down/up (keep_addr_on_down=1) and skip DAD (accept_dad=0).
    `close` stops everything the host runs and deletes the namespace; it is idempotent.
    """

    def __init__(self, label: str = "host") -> None:
        self.label = label
        self._closers: list[Callable[[], None]] = []
        self._ifcount = 0
        self.tmpdir = Path("/nonexistent")
        name = f"{NETNS_PREFIX}{OWNER}-{secrets.token_hex(3)}"
        while (NETNS_DIR / name).exists():
            name = f"{NETNS_PREFIX}{OWNER}-{secrets.token_hex(3)}"
        super().__init__(name)
        try:
            self.tmpdir = Path(tempfile.mkdtemp(prefix=f"{NETNS_PREFIX}{OWNER}-"))
            self.sysctl(
                {
                    "net.ipv6.conf.all.keep_addr_on_down": "1",
                    "net.ipv6.conf.default.keep_addr_on_down": "1",
                    "net.ipv6.conf.all.accept_dad": "0",
                    "net.ipv6.conf.default.accept_dad": "0",
                }
            )
        except BaseException:
            self.close()
            raise

    def __repr__(self) -> str:
        return f"Host({self.label!r}, {self.name!r})"

    def __enter__(self) -> Host:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # commands

    def run(
        self, cmd: Sequence[str], check: bool = True, timeout: float = 30.0, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run `cmd` inside the host, output captured as text; CommandError if `check` and it fails."""
        return run(self.exec_argv(cmd), check=check, timeout=timeout, input=input)

    def popen(
        self,
        cmd: Sequence[str],
        env: Mapping[str, str] | None = None,
        stdin: Any = subprocess.DEVNULL,
        stdout: Any = subprocess.DEVNULL,
        stderr: Any = subprocess.DEVNULL,
    ) -> subprocess.Popen[bytes]:
        """Start `cmd` inside the host (own session, PYWGT_OWNER set); `close` stops it."""
        return self.spawn(cmd, _child_env(env), stdin, stdout, stderr)

    def ip(self, *args: str, check: bool = True, timeout: float = 10.0) -> str:
        """`ip -n <name> ARGS...`; returns stdout."""
        return run(["ip", "-n", self.name, *args], check=check, timeout=timeout).stdout

    def sysctl(self, settings: Mapping[str, str]) -> None:
        self.run(["sysctl", "-q", "-w", *(f"{k}={v}" for k, v in settings.items())])

    def enable_forwarding(self) -> None:
        self.sysctl({"net.ipv4.ip_forward": "1", "net.ipv6.conf.all.forwarding": "1"})

    # addresses, links, routes

    def new_ifname(self, prefix: str = "eth") -> str:
        """`eth0`, `eth1`, ...: names inside this namespace only, so they need not be unique."""
        name = f"{prefix}{self._ifcount}"
        self._ifcount += 1
        return name

    def add_address(self, ifname: str, address: str | IPInterface) -> None:
        """Add (or re-add: idempotent) an address with its prefix; IPv6 without DAD."""
        iface = _as_interface(address)
        self.ip("addr", "replace", str(iface), "dev", ifname, *(["nodad"] if iface.version == 6 else []))

    def del_address(self, ifname: str, address: str | IPInterface) -> None:
        self.ip("addr", "del", str(_as_interface(address)), "dev", ifname)

    def set_link(self, ifname: str, up: bool) -> None:
        self.ip("link", "set", "dev", ifname, "up" if up else "down")

    def add_route(self, dst: str, dev: str | None = None, via: str | None = None) -> None:
        """`ip route replace DST [via VIA] [dev DEV]` (IPv6 when DST or VIA is IPv6)."""
        family = "-6" if ":" in dst or (via is not None and ":" in via) else "-4"
        args = ["route", "replace", dst]
        args += ["via", via] if via is not None else []
        args += ["dev", dev] if dev is not None else []
        self.ip(family, *args)

    def has_link(self, ifname: str) -> bool:
        return run(["ip", "-n", self.name, "link", "show", "dev", ifname], check=False).returncode == 0

    # traffic

    def ping(self, address: str, count: int = 1, timeout: float = 5.0) -> bool:
        """True if `count` echo replies from `address` (IPv4 or IPv6) arrive within `timeout` seconds.

        iputils ping keeps sending (every 0.2 s) until then, so count=1 also waits for a tunnel to
        come up. The deadline is whole seconds (ping's -w takes an integer): rounded up.
        """
        deadline = max(1, math.ceil(timeout))
        cmd = ["ping", "-n", "-q", "-c", str(count), "-i", "0.2", "-W", "1", "-w", str(deadline)]
        try:
            done = self.run([*cmd, str(ip_address(address))], check=False, timeout=deadline + 5)
        except subprocess.TimeoutExpired:
            return False
        return done.returncode == 0

    # files

    def write_secret(self, name: str, text: str) -> Path:
        """Write `text` to a 0600 file `name` in the host's 0700 directory (replacing it)."""
        path = self.tmpdir / name
        path.unlink(missing_ok=True)
        return write_secret(path, text)

    # lifetime

    def on_close(self, closer: Callable[[], None]) -> None:
        """Call `closer` first thing in `close` (last registered, first called)."""
        self._closers.append(closer)

    def close(self) -> list[str]:
        """The closers (last registered, first called), then the namespace, then the directory."""
        if self.closed:
            return []
        self.closed = True
        _close_all(
            [
                *reversed(self._closers),
                lambda: _removed(self.remove()),
                lambda: shutil.rmtree(self.tmpdir, ignore_errors=True),
            ]
        )
        return []


def _removed(problems: list[str]) -> None:
    if problems:
        raise RuntimeError("; ".join(problems))


def _kill_pids(pids: Iterable[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


class Topology:
    """The hosts of one test; `close` (the `topology` fixture calls it) closes them all."""

    def __init__(self) -> None:
        self.hosts: list[Host] = []

    def host(self, label: str = "host") -> Host:
        host = Host(label)
        self.hosts.append(host)
        return host

    def close(self) -> None:
        _close_all(host.close for host in reversed(self.hosts))

    def __enter__(self) -> Topology:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- links ----------------------------------------------------------------------------------------


@dataclass
class Link:
    """A veth pair: `a_ifname` in host `a`, `b_ifname` in host `b`. Gone when either host closes."""

    a: Host
    b: Host
    a_ifname: str
    b_ifname: str
    _addresses: dict[str, list[IPInterface]] = field(default_factory=dict, repr=False)

    def _end(self, host: Host) -> str:
        if host is self.a:
            return self.a_ifname
        if host is self.b:
            return self.b_ifname
        raise ValueError(f"{host} is not an end of {self}")

    def ifname(self, host: Host) -> str:
        return self._end(host)

    def addresses(self, host: Host) -> list[IPInterface]:
        self._end(host)
        return list(self._addresses.get(host.name, []))

    def address(self, host: Host, version: int = 4) -> str:
        """The first IPv`version` underlay address of `host`'s end, without prefix length."""
        for iface in self.addresses(host):
            if iface.version == version:
                return str(iface.ip)
        raise LookupError(f"{host} has no IPv{version} address on {self._end(host)}")

    def set_addresses(self, host: Host, addresses: Iterable[str | IPInterface]) -> None:
        """Roam: remove `host`'s current addresses on this link and add `addresses` instead."""
        ifname = self._end(host)
        new = [_as_interface(a) for a in addresses]
        for old in self._addresses.get(host.name, []):
            if old not in new:
                host.del_address(ifname, old)
        for iface in new:
            host.add_address(ifname, iface)
        self._addresses[host.name] = new

    def down(self) -> None:
        """Both ends down (addresses stay: IPv4 always, IPv6 by keep_addr_on_down)."""
        self.a.set_link(self.a_ifname, False)
        self.b.set_link(self.b_ifname, False)

    def up(self) -> None:
        self.a.set_link(self.a_ifname, True)
        self.b.set_link(self.b_ifname, True)


def link(
    a: Host,
    b: Host,
    a_addrs: Iterable[str | IPInterface] = (),
    b_addrs: Iterable[str | IPInterface] = (),
    mtu: int = 1500,
) -> Link:
    """A veth pair between `a` and `b` (`ethN` on each side), addresses with prefix length, up."""
    a_ifname, b_ifname = a.new_ifname(), b.new_ifname()
    add_veth(a, a_ifname, b, b_ifname, mtu)
    result = Link(a, b, a_ifname, b_ifname)
    result.set_addresses(a, a_addrs)
    result.set_addresses(b, b_addrs)
    result.up()
    return result


# --- keys and configurations ----------------------------------------------------------------------


@dataclass(frozen=True)
class KeyPair:
    private: bytes = field(repr=False)
    public: bytes

    @classmethod
    def generate(cls) -> KeyPair:
        private = generate_private_key(secrets.token_bytes)
        return cls(private, public_key_for(private))

    @property
    def private_b64(self) -> str:
        return encode_key(self.private)

    @property
    def public_b64(self) -> str:
        return encode_key(self.public)


def generate_keypair() -> KeyPair:
    return KeyPair.generate()


def generate_psk() -> bytes:
    return generate_preshared_key(secrets.token_bytes)


def _host_prefix(iface: IPInterface) -> IPv4Network | IPv6Network:
    return ip_network(f"{iface.ip}/{iface.max_prefixlen}")


def tunnel_configs(
    a_keys: KeyPair,
    b_keys: KeyPair,
    a_addresses: Sequence[str],
    b_addresses: Sequence[str],
    a_endpoint: str | None = None,
    b_endpoint: str | None = None,
    a_port: int = WG_PORT,
    b_port: int = WG_PORT,
    psk: bytes | None = None,
    keepalive: int = 0,
    mtu: int | None = None,
) -> tuple[InterfaceConfig, InterfaceConfig]:
    """Two interfaces that are each other's only peer.

    `a_addresses`/`b_addresses` are the inner addresses with prefix length (10.99.0.1/24, fd99::1/64);
    each side allows the other's addresses as /32 and /128. `a_endpoint` is the underlay IP (no
    port) at which A is reachable, written into B's peer entry with `a_port`; None leaves it out.
    """
    a_ifaces = [_as_interface(a) for a in a_addresses]
    b_ifaces = [_as_interface(b) for b in b_addresses]

    def side(
        keys: KeyPair,
        mine: list[IPInterface],
        port: int,
        peer: KeyPair,
        theirs: list[IPInterface],
        endpoint: str | None,
        peer_port: int,
    ) -> InterfaceConfig:
        return InterfaceConfig(
            private_key=keys.private,
            addresses=list(mine),
            listen_port=port,
            mtu=mtu,
            peers=[
                PeerConfig(
                    public_key=peer.public,
                    preshared_key=psk,
                    endpoint=EndpointSpec(str(ip_address(endpoint)), peer_port) if endpoint else None,
                    allowed_ips=[_host_prefix(i) for i in theirs],
                    persistent_keepalive=keepalive,
                )
            ],
        )

    return (
        side(a_keys, a_ifaces, a_port, b_keys, b_ifaces, b_endpoint, b_port),
        side(b_keys, b_ifaces, b_port, a_keys, a_ifaces, a_endpoint, a_port),
    )


def wg_setconf_text(config: InterfaceConfig) -> str:
    """The configuration in wg(8) setconf form: wg-quick INI without Address, MTU and DNS."""
    return format_wg_quick(dataclasses.replace(config, addresses=[], mtu=None, dns=[], warnings=[]))


# --- wg show --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PeerStatus:
    """One peer line of `wg show IF dump` (its preshared key left out)."""

    public_key: bytes
    endpoint: str | None
    allowed_ips: tuple[str, ...]
    latest_handshake: int  # Unix seconds, 0 = never
    rx_bytes: int
    tx_bytes: int
    persistent_keepalive: int  # seconds, 0 = off


def wg_peers(host: Host, ifname: str) -> dict[bytes, PeerStatus]:
    """The peers of interface `ifname` in `host` as `wg show IF dump` reports them, by public key.

    The dump's first line holds the private key; it is dropped here and never kept or shown.
    """
    done = host.run(["wg", "show", ifname, "dump"], timeout=10.0)
    peers: dict[bytes, PeerStatus] = {}
    for line in done.stdout.splitlines()[1:]:
        public, _psk, endpoint, allowed, handshake, rx, tx, keepalive = line.split("\t")
        status = PeerStatus(
            public_key=decode_key(public, "public key"),
            endpoint=None if endpoint == "(none)" else endpoint,
            allowed_ips=tuple(a for a in allowed.split(",") if a and a != "(none)"),
            latest_handshake=int(handshake),
            rx_bytes=int(rx),
            tx_bytes=int(tx),
            persistent_keepalive=0 if keepalive == "off" else int(keepalive),
        )
        peers[status.public_key] = status
    return peers


def wait_for_handshake(
    host: Host, ifname: str, peer: bytes, after: int = 0, timeout: float = 10.0
) -> PeerStatus:
    """Poll `wg show` until `peer`'s latest handshake is later than `after` (Unix seconds)."""
    found: list[PeerStatus] = []

    def done() -> bool:
        status = wg_peers(host, ifname).get(peer)
        if status is not None and status.latest_handshake > after:
            found.append(status)
            return True
        return False

    wait_until(done, timeout, f"a handshake with {encode_key(peer)} on {ifname} in {host}", 0.1)
    return found[0]


# --- wireguard-go ---------------------------------------------------------------------------------


class WireguardGo:
    """wireguard-go serving interface `ifname` inside `host`, configured from `config`: Debian's
    (on PATH), or the build at `binary` (upstream 2025: pywg.runtime.lab.upstream_wireguard_go).

    `start` runs `wireguard-go -f IFNAME` (LOG_LEVEL=error, output to `log_path`), waits for its UAPI
    socket to accept connections, then `configure`s it. `stop` ends it and removes its socket; the
    host's `close` calls `stop`. Keys only ever reach wireguard-go through a 0600 file that
    `wg setconf` reads and that is deleted right after.
    """

    def __init__(
        self, host: Host, config: InterfaceConfig, ifname: str | None = None, binary: str = "wireguard-go"
    ) -> None:
        self.host = host
        self.config = config
        self.binary = binary
        self.ifname = ifname or unique_ifname()
        if len(self.ifname) > IFNAME_MAX:
            raise ValueError(f"interface name {self.ifname!r} is longer than {IFNAME_MAX} characters")
        _session_ifnames.add(self.ifname)
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = host.tmpdir / f"{self.ifname}.log"
        host.on_close(self.stop)

    def __repr__(self) -> str:
        return f"WireguardGo({self.ifname!r} in {self.host.name!r})"

    @property
    def socket_path(self) -> Path:
        return WG_SOCKET_DIR / f"{self.ifname}.sock"

    @property
    def public_key(self) -> bytes:
        return self.config.public_key

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def start(self, timeout: float = 10.0) -> WireguardGo:
        if self.running:
            raise RuntimeError(f"{self} is already running")
        with open(self.log_path, "ab") as log:
            self.process = self.host.popen(
                [self.binary, "-f", self.ifname],
                env={"LOG_LEVEL": "error", "WG_PROCESS_FOREGROUND": "1"},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        process = self.process

        def ready() -> bool:
            if process.poll() is not None:
                raise AssertionError(
                    f"{self} exited with status {process.returncode} before its UAPI socket"
                    f" appeared:\n{self.log()}"
                )
            return _socket_accepts(self.socket_path)

        wait_until(ready, timeout, f"the UAPI socket {self.socket_path}")
        self.configure()
        return self

    def configure(self, config: InterfaceConfig | None = None) -> None:
        """`wg setconf` the keys, port and peers; then MTU, addresses, link up and routes with ip(8).

        Routes go to every allowed IP that no interface address's prefix already covers.
        """
        if config is not None:
            self.config = config
        cfg = self.config
        path = self.host.write_secret(f"{self.ifname}.conf", wg_setconf_text(cfg))
        try:
            self.host.run(["wg", "setconf", self.ifname, str(path)])
        finally:
            path.unlink(missing_ok=True)
        self.host.ip("link", "set", "dev", self.ifname, "mtu", str(cfg.mtu or DEFAULT_MTU))
        for address in cfg.addresses:
            self.host.add_address(self.ifname, address)
        self.host.set_link(self.ifname, True)
        for peer in cfg.peers:
            for net in peer.allowed_ips:
                covered = any(
                    a.version == net.version and net.subnet_of(a.network)  # type: ignore[arg-type]
                    for a in cfg.addresses
                )
                if not covered:
                    self.host.add_route(str(net), dev=self.ifname)

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM (SIGKILL after `timeout`), remove the socket, wait for the interface to go."""
        if self.process is not None:
            stop_process(self.process, timeout)
            self.process = None
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
        if not self.host.closed:
            wait_until(lambda: not self.host.has_link(self.ifname), 5.0, f"{self.ifname} to disappear")

    def restart(self, timeout: float = 10.0) -> WireguardGo:
        """stop, then start with the same name and configuration (a peer that lost all its state)."""
        self.stop()
        return self.start(timeout)

    def peers(self) -> dict[bytes, PeerStatus]:
        return wg_peers(self.host, self.ifname)

    def wait_for_handshake(self, peer: bytes, after: int = 0, timeout: float = 10.0) -> PeerStatus:
        return wait_for_handshake(self.host, self.ifname, peer, after, timeout)


def _socket_accepts(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(str(path))
        except OSError:
            return False
    return True


# --- traffic --------------------------------------------------------------------------------------

_TCP_SERVER = r"""
import hashlib, socket, sys
address, timeout = sys.argv[1], float(sys.argv[2])
family = socket.AF_INET6 if ":" in address else socket.AF_INET
with socket.socket(family, socket.SOCK_STREAM) as listener:
    listener.bind((address, 0))
    listener.listen(1)
    listener.settimeout(timeout)
    print(listener.getsockname()[1], flush=True)
    conn, _ = listener.accept()
    digest, total = hashlib.sha256(), 0
    with conn:
        conn.settimeout(timeout)
        while chunk := conn.recv(1 << 16):
            digest.update(chunk)
            total += len(chunk)
print(total, digest.hexdigest(), flush=True)
"""

_TCP_CLIENT = r"""
import hashlib, os, socket, sys
address, port, size, timeout = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
digest, left = hashlib.sha256(), size
with socket.create_connection((address, port), timeout=timeout) as conn:
    while left:
        chunk = os.urandom(min(left, 1 << 16))
        digest.update(chunk)
        conn.sendall(chunk)
        left -= len(chunk)
    conn.shutdown(socket.SHUT_WR)
    while conn.recv(1 << 16):
        pass
print(size, digest.hexdigest(), flush=True)
"""


def _read_line(process: subprocess.Popen[bytes], deadline: float) -> str:
    """One line of `process`'s stdout, or "" at EOF or when `deadline` (monotonic) passes."""
    assert process.stdout is not None
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        return ""
    ready, _, _ = select.select([process.stdout], [], [], remaining)
    return process.stdout.readline().decode(errors="replace").strip() if ready else ""


def _report(what: str) -> None:
    print(f"topology: {what}", file=sys.stderr)


def tcp_transfer(
    server_host: Host, client_host: Host, address: str, size_bytes: int, timeout: float = 30.0
) -> bool:
    """Send `size_bytes` random bytes over TCP from `client_host` to `address` in `server_host`.

    True if the server received exactly that many bytes with the SHA-256 the client computed, all
    within `timeout` seconds (also the idle limit of each socket). On failure the reason goes to
    stderr (pytest shows it) and the result is False; nothing is left running.
    """
    deadline = time.monotonic() + timeout
    python = sys.executable
    server = server_host.popen(
        [python, "-c", _TCP_SERVER, str(ip_address(address)), str(timeout)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        port = _read_line(server, deadline)
        if not port.isdigit():
            _report(f"TCP server on {address} did not start: {port!r}")
            return False
        try:
            client = client_host.run(
                [python, "-c", _TCP_CLIENT, str(ip_address(address)), port, str(size_bytes), str(timeout)],
                check=False,
                timeout=max(0.1, deadline - time.monotonic()),
            )
        except subprocess.TimeoutExpired:
            _report(f"TCP client to {address} timed out after {timeout} s")
            return False
        received = _read_line(server, deadline)
        sent = client.stdout.strip()
        if client.returncode != 0 or received != sent or sent.split()[:1] != [str(size_bytes)]:
            _report(
                f"TCP transfer to {address}: client sent {sent!r} (status {client.returncode},"
                f" {client.stderr.strip()[-300:]!r}), server received {received!r}"
            )
            return False
        return True
    finally:
        stop_process(server, 2.0)


def iperf3(
    server_host: Host,
    client_host: Host,
    address: str,
    seconds: int = 2,
    reverse: bool = False,
    parallel: int = 1,
    port: int = 5201,
) -> float:
    """TCP throughput in Mbit/s from `client_host` to `address` in `server_host` (`reverse`: back).

    Runs a one-shot `iperf3 -s -1` bound to `address`, then `iperf3 -c -J` for `seconds`; raises
    AssertionError with iperf3's error if the test fails. Bounded: connect timeout 5 s, whole run
    `seconds` + 20 s.
    """
    addr = str(ip_address(address))
    server = server_host.popen(["iperf3", "-s", "-1", "-B", addr, "-p", str(port)])
    try:
        wait_until(lambda: tcp_listening(server_host, port), 5.0, f"iperf3 listening on {addr} port {port}")
        cmd = ["iperf3", "-c", addr, "-p", str(port), "-t", str(seconds), "-J", "--connect-timeout", "5000"]
        cmd += ["-P", str(parallel)] + (["-R"] if reverse else [])
        done = client_host.run(cmd, check=False, timeout=seconds + 20)
        try:
            result = json.loads(done.stdout)
        except json.JSONDecodeError:
            raise AssertionError(f"iperf3 to {addr}: no JSON result: {done.stderr.strip()}") from None
        if "error" in result or done.returncode != 0:
            raise AssertionError(f"iperf3 to {addr}: {result.get('error', done.stderr.strip())}")
        return float(result["end"]["sum_received"]["bits_per_second"]) / 1e6
    finally:
        stop_process(server, 2.0)


# --- sweeping -------------------------------------------------------------------------------------


@dataclass
class Leftovers:
    namespaces: list[str] = field(default_factory=list)
    processes: list[int] = field(default_factory=list)
    sockets: list[Path] = field(default_factory=list)
    tmpdirs: list[Path] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.namespaces or self.processes or self.sockets or self.tmpdirs)


def _tagged_processes() -> Iterator[tuple[int, str]]:
    """(pid, owner tag) of every process whose environment has PYWGT_OWNER."""
    marker = f"{OWNER_ENV}=".encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                environ = f.read()
        except OSError:
            continue
        for item in environ.split(b"\0"):
            if item.startswith(marker):
                yield int(entry), item[len(marker) :].decode(errors="replace")
                break


def tag_of(name: str) -> str | None:
    """The owner tag in a name this module made (`pywgt-<owner>-<random>`), else None."""
    match = _TAGGED.fullmatch(name)
    return match.group(1) if match else None


def find_leftovers(owned: Callable[[str], bool]) -> Leftovers:
    """Resources whose owner tag satisfies `owned`; sockets: our `wgt*` ones that nobody serves.

    Sockets carry no tag, so a socket counts when no process accepts on it and either it is older
    than STALE_SOCKET_AGE or its interface name was made in this session.
    """
    found = Leftovers()
    found.processes = sorted(pid for pid, tag in _tagged_processes() if owned(tag))
    if NETNS_DIR.is_dir():
        found.namespaces = sorted(
            n for n in os.listdir(NETNS_DIR) if (tag := tag_of(n)) is not None and owned(tag)
        )
    tmp = Path(tempfile.gettempdir())
    found.tmpdirs = sorted(
        p for p in tmp.glob(f"{NETNS_PREFIX}*") if (tag := tag_of(p.name)) is not None and owned(tag)
    )
    if WG_SOCKET_DIR.is_dir():
        now = time.time()
        for path in sorted(WG_SOCKET_DIR.iterdir()):
            if not _OUR_SOCKET.fullmatch(path.name):
                continue
            try:
                old = now - path.lstat().st_mtime > STALE_SOCKET_AGE
            except FileNotFoundError:
                continue
            mine = path.name.removesuffix(".sock") in _session_ifnames
            if (old or mine) and not _socket_accepts(path):
                found.sockets.append(path)
    return found


def _wireguard_go_socket(pid: int) -> Path | None:
    """The UAPI socket of process `pid` if it is `wireguard-go [-f] IFNAME`."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().decode(errors="replace").split("\0")[:-1]
    except OSError:
        return None
    if not argv or os.path.basename(argv[0]) != "wireguard-go" or len(argv) < 2:
        return None
    return WG_SOCKET_DIR / f"{argv[-1]}.sock"


def _end_processes(pids: Sequence[int], grace: float = 2.0) -> None:
    sockets = [path for pid in pids if (path := _wireguard_go_socket(pid)) is not None]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    _kill_pids(pid for pid in pids if alive(pid))
    for path in sockets:
        if path.is_socket() and not _socket_accepts(path):
            path.unlink(missing_ok=True)


def own_leftovers() -> Leftovers:
    """What this session made and has not cleaned up (none should remain after the fixtures)."""
    return find_leftovers(lambda tag: tag == OWNER)


def sweep(include_own: bool = False) -> Leftovers:
    """Remove what runs whose pytest process is gone left behind (and our own, if `include_own`).

    Order: processes (SIGTERM, so wireguard-go removes its socket; SIGKILL after 2 s), anything
    still inside the namespaces, the namespaces, sockets nobody serves (including those of the
    wireguard-go processes just ended) and the temporary directories. Returns what it removed.
    """
    found = find_leftovers(lambda tag: (include_own and tag == OWNER) or not owner_alive(tag))
    _end_processes(found.processes)
    for name in found.namespaces:
        _removed(remove_netns(name))
    for path in found.sockets:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    for path in found.tmpdirs:
        shutil.rmtree(path, ignore_errors=True)
    return found


# --- fixtures -------------------------------------------------------------------------------------


@pytest.fixture(scope="session", autouse=True)
def topology_sweep() -> Iterator[None]:
    """Once per session: clear what dead runs left; at the end, anything of this session's.

    Only as root: without root this session makes no namespace, and cannot remove one a dead run
    left (which failed every test of a non-root run at setup)."""
    if os.geteuid() != 0:
        yield
        return
    swept = sweep()
    if swept:
        _report(f"removed leftovers of earlier runs: {swept}")
    yield
    sweep(include_own=True)


@pytest.fixture
def topology() -> Iterator[Topology]:
    """A `Topology` whose hosts (namespaces, processes, files, sockets) go away after the test."""
    world = Topology()
    try:
        yield world
    finally:
        world.close()
