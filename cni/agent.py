"""The pywg node agent: every userspace WireGuard tunnel of a node, in one process.

    python -m cni.agent [--state-dir /run/pywg-cni] [--socket /run/pywg-cni/agent.sock] [--supervise]
                        [--metrics ADDRESS:PORT] [policy options: cni/policy.py]
                        [Kubernetes options: cni/live.py]

One uvloop loop runs one pywg Engine per attachment (a Pod's `net1`), so tunnels outlive the CNI
plugin process and whatever ran it (kubelet's runtime, the Multus thick-mode daemon), and idle tunnels
cost a few hundred kilobytes each instead of a process each. With `--supervise` a small supervisor
runs the agent as a child and restarts it at once (backoff capped at 1 s) whenever it dies (it execs
cni/supervisor.py, a bare interpreter, so it costs ~15 MB instead of a second agent's ~45 MB); in
Kubernetes the DaemonSet does the same.

Who decides what. The socket, the state directory and the policy (cni/policy.py: UDP port range,
fwmark, where config files may be, per-attachment limits) come from this command line only. Network
configs, Secrets and annotations are tenants' input: they choose nothing on the node.

Protocol. A unix stream socket, mode 0600 (root only); one JSON object per line in (at most
MAX_REQUEST bytes), one per line out, any number of requests per connection, answered in order.
Every reply has `ok`; a failed operation has `{"ok": false, "code": <CNI error code, cni/spec.py>,
"msg": "<one line>"}`.

* `{"op": "add", "container_id", "ifname", "netns", "pod": "ns/name", "network": "<config name>",
  "config": "<config JSON or wg-quick INI>", "source"?: "<what errors call it>", "mode"?: "auto" |
  "kernel" | "userspace", "pod_uid"?: "<uid>", "secret"?: {"namespace", "name"}}` (the Secret the
  config is from: watched, see below). Refused (code 7, naming the limit) over the policy's limits,
  with a listenPort outside its port range or a fwmark it does not allow. Userspace: creates a
  persistent TUN `ifname` in `netns` with the MTU, every address and a route for every allowed-IPs
  prefix; UDP sockets in the agent's namespace on a port of the range (the config's listenPort when
  it is inside); the UAPI socket /var/run/wireguard/<name>.sock (name = "cni" + 12 hex digits of
  sha256("<container_id>/<ifname>"), so `wg show <name>` works); then runs its engine. Kernel: a
  WireGuard link made and configured in the agent's namespace (so its UDP socket is there), moved
  into `netns` as `ifname`, with the same MTU, addresses and routes (cni/kernel.py). auto (the
  default) is kernel when this kernel can make a WireGuard link (probed once), else userspace;
  kernel on a kernel without WireGuard is refused. Reply: `{"ok": true, "name", "mode",
  "listen_port", "interface", "netns", "mtu", "public_key", "addresses": [...], "routes": [...],
  "warnings": [...]}`. All or nothing: a failed add leaves no link, socket or state. A private key
  already used by another attachment of this node is refused, naming that pod; with the agent's own
  API credentials, one used by a Pod anywhere in the cluster too, naming the Pod and its node (a
  Lease per key, cni/live.py).
* `{"op": "del", "container_id", "ifname", "netns"?, "network"?}`: stop the engine, delete the link
  (when its namespace still exists), remove the UAPI socket and the state. An attachment of another
  network is left alone. Succeeds when there is nothing to remove (repeated DEL, namespace gone, DEL
  after a failed ADD). Reply `{"ok": true, "removed": bool}`.
* `{"op": "check", "container_id", "ifname", "netns"}` → `{"ok": bool, "problems": [...]}`: the engine
  runs and serves this config (key, peers, allowed IPs; in kernel mode, the WireGuard link has them);
  the link exists, is up and has carrier; the addresses and routes are there.
* `{"op": "gc", "network", "valid": [{"containerID", "ifname"}, ...]}` removes the attachments of
  `network` that `valid` does not list, and nothing of other networks; it goes on past errors:
  `{"ok": bool, "removed": [names], "errors": [...]}` (+ code and msg when not ok).
* `{"op": "status"}` → `{"ok": true, "tunnels": <running engines>, "kernel_links": n, "attachments": n,
  "pid": <agent>}`.
* `{"op": "list"}` → `{"ok": true, "attachments": [{"container_id", "ifname", "pod", "network",
  "name", "mode", "netns", "listen_port", "running"}]}`; a kernel attachment is always `running`.
* `{"op": "cni", "env": {"CNI_COMMAND": ..., ...}, "stdin": "<network config>"}` runs the CNI plugin
  (cni/plugin.py) for the compiled entrypoint (cni/entrypoint.c), which runtimes execute on nodes
  without Python: `{"ok": true, "status": <exit status>, "stdout": "<what to print>"}`. stdin's bytes
  that are not UTF-8 come as lone surrogates (surrogateescape); only CNI_* variables are used. The
  plugin runs in a thread of its own pool and hands its add/del/check/gc straight to this agent.

Live operations (cni/live.py; only with the agent's own API credentials: --kubeconfig, or the
in-cluster ServiceAccount). The Secret of every attachment is watched; a change is admitted as an
add is (size, limits, policy, the key not in use elsewhere, host names) and applied to the running
tunnel or kernel link: peers added, removed and changed, keys, endpoints, keepalives, addresses,
MTU and routes; unchanged peers keep their sessions. A change that is refused leaves everything as it
was and says why in an Event on the Pod; a deleted Secret leaves the tunnel as it is. Events on the
Pod also tell of handshakes (the first, failing for --handshake-failing-after, working again),
at most one write per Pod and reason per --event-interval. --metrics serves Prometheus metrics
(cni/metrics.py).

Routes. Every allowed-IPs prefix is routed through the interface in the Pod's main table. A prefix the
Pod already routes elsewhere with the same metric (typically its default route via eth0 when a config
allows 0.0.0.0/0) is added with metric SHADOWED_METRIC instead: both routes exist, the Pod's own one
keeps precedence so its cluster networking is not hijacked, and the reply's `warnings` says so. To
send all traffic through the tunnel, the Pod changes its routes itself.

State (cni/state.py). On start the agent re-attaches every attachment whose namespace still exists
(same namespace, by inode), several at a time: it re-opens the persistent TUN, whose addresses and
routes are still there, and rebuilds the device from the stored config on the stored UDP port;
sessions re-handshake on the next packet. Attachments whose namespace is gone, and incomplete ones,
are removed. A kernel attachment needs nothing re-attached: its link lives in the Pod's namespace by
itself. SIGTERM stops the agent within STOP_DEADLINE whatever is in flight, keeping the tunnels'
links and state, so an upgrade or a restart resumes them (an add cut short is incomplete, and the
next agent removes what it made). An engine that stops on its own (its namespace or link deleted,
its UAPI socket removed) is torn down; its attachment stays, reported by check, until del or gc.

Concurrency. No operation waits for another attachment's: each holds the lock of its own (container
ID, interface) only, and a private key is claimed by one attachment at a time. Their blocking parts
(netlink, TUN ioctls) run in a pool of worker threads, host names are resolved a few at a time with
one deadline (pywg/runtime/resolve.py), so the loop keeps forwarding every tunnel's packets
meanwhile. Key material is never in argv, the environment or the log, and the process cannot dump
core.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import fcntl
import json
import logging
import os
import re
import signal
import socket
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import uvloop

from cni import kernel, live, plugin, policy
from cni.k8s import ApiClient, KubernetesError, secret_config_text
from cni.live import (
    AttachmentHealth,
    EventRecorder,
    Holder,
    KeyInUse,
    Leases,
    LiveOptions,
    PodRef,
    SecretRef,
    SecretWatch,
    WatchCounters,
)
from cni.pacing import LargeConfigLane
from cni.policy import NodePolicy, PolicyError, PortPool, udp_port_free
from cni.spec import (
    DECODING_FAILURE,
    INTERNAL,
    INVALID_ENVIRONMENT,
    INVALID_NETNS,
    INVALID_NETWORK_CONFIG,
    TRY_AGAIN_LATER,
    UNSUPPORTED_FIELD,
)
from cni.state import KERNEL, USERSPACE, Attachment, Key, OpError, StateStore, attachment_name
from cni.supervisor import EXIT_ALREADY_RUNNING, EXIT_USAGE
from pywg.config import ConfigError, InterfaceConfig, parse_config
from pywg.core import Endpoint, encode_key, format_endpoint
from pywg.core.constants import DEFAULT_MTU
from pywg.runtime import netconfig, tun_offload
from pywg.runtime.netns import NamespaceNotFoundError, netns_identity, resolve_netns, same_netns
from pywg.runtime.resolve import ResolveTimeout, host_names, resolve_concurrently
from pywg.runtime.system import disable_core_dumps
from pywg.runtime.tun import Tun, TunError, attach_tun, open_tun
from pywg.runtime.tunnel import SetupError, Tunnel, apply_peers, tunnel_on_tun
from pywg.runtime.uapi_server import socket_in_use, socket_path

if TYPE_CHECKING:
    from cni.metrics import AgentMetrics

SHADOWED_METRIC = 4096
# A request line: an add's config (at most --max-config-bytes) or a `cni` op's network config as a
# JSON string, whose escapes may take several bytes per byte (cni/entrypoint.c sends at most this).
MAX_REQUEST = 8 << 20
READY_TIMEOUT = 10.0
STOP_DEADLINE = 1.5  # SIGTERM: engines stopped and the process gone within this (plus exit)
# Attachments whose netlink and TUN work runs at once (FIFO beyond). More only adds GIL contention:
# 100 ADDs, 20 in flight, on 2 cores: p95 ~310 ms and 13 ms of agent CPU each with 2, ~430 ms and
# 15.7 ms with 8. Large configs take one of them at most (cni/pacing.py); DNS and the API have pools
# of their own, so nothing here waits for a tenant's server.
WORKERS = 2
RESOLVERS = 8  # getaddrinfo calls at once, over all attachments; each add uses at most RESOLVE_PARALLEL
RESOLVE_PARALLEL = 4
RESTORE_PARALLEL = 8  # attachments re-attached at once after a restart
CNI_WORKERS = 32  # concurrent `cni` ops; each mostly waits for its own add/del
API_WORKERS = 4  # the agent's own API requests (Leases, Events) at once; watches have threads of their own
HEALTH_INTERVAL = 2.0  # how often peers' handshakes are looked at, for Events
# The loop thread forwards every tunnel's packets and gives up the GIL at each system call; while a
# worker parses or applies a config of thousands of peers, taking it back waits for the worker's
# switch interval (Python's default: 5 ms), which would throttle every tunnel of the node.
SWITCH_INTERVAL = 0.0005
PARSED = "parsed"  # an add's config already parsed by the plugin in this process (InProcessLink)

_CONTAINER_ID = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.\-]*")
_log = logging.getLogger("pywg-cni-agent")
T = TypeVar("T")


# --- blocking work, run in a worker thread -----------------------------------------------------


def _configure(att: Attachment) -> None:
    """MTU, addresses, link up and routes; a route the Pod has elsewhere gets SHADOWED_METRIC."""
    result = netconfig.configure_interface(
        att.netns,
        att.ifname,
        att.cfg.mtu or DEFAULT_MTU,
        att.cfg.addresses,
        att.routes,
        shadow_metric=SHADOWED_METRIC,
    )
    att.skipped = [str(r) for r in result.routes_skipped]
    att.shadowed = [str(r) for r in result.routes_shadowed]


def _reconfigure(
    att: Attachment, cfg: InterfaceConfig, routes: list[Any], stale: list[Any], old_addresses: list[Any]
) -> None:
    """A live update of the link: routes and addresses the new config drops, then MTU, addresses
    and routes as `_configure` sets them. What is in both configs is not touched."""
    netconfig.remove_routes(att.netns, att.ifname, stale)
    netconfig.remove_addresses(att.netns, att.ifname, old_addresses)
    result = netconfig.configure_interface(
        att.netns, att.ifname, cfg.mtu or DEFAULT_MTU, cfg.addresses, routes, shadow_metric=SHADOWED_METRIC
    )
    att.skipped = [str(r) for r in result.routes_skipped]
    att.shadowed = [str(r) for r in result.routes_shadowed]


def _open_udp_and_device(att: Attachment, tun: Tun, ports: PortPool) -> Tunnel:
    """The tunnel on the attachment's port; after a restart whose port another process took
    meanwhile, on another one of the operator's range."""
    assert att.listen_port is not None
    try:
        return tunnel_on_tun(att.cfg, tun, att.name, att.endpoints, att.routes, listen_port=att.listen_port)
    except SetupError:
        if not att.complete or att.cfg.listen_port:
            raise
    _log.warning("%s: UDP port %d is taken now; using another one", att.name, att.listen_port)
    port = ports.take()
    if port is None:
        raise OpError(TRY_AGAIN_LATER, f"no free UDP port left in {ports.first}-{ports.last}")
    ports.release(att.listen_port)
    att.listen_port = port
    return tunnel_on_tun(att.cfg, tun, att.name, att.endpoints, att.routes, listen_port=port)


def _prepare_new(att: Attachment) -> None:
    att.routes = att.cfg.allowed_prefixes
    if netconfig.link_exists(att.netns, att.ifname):
        raise OpError(INTERNAL, f"interface {att.ifname} already exists in network namespace {att.netns}")


def build_new(att: Attachment, ports: PortPool) -> Tunnel:
    """Create the persistent TUN and everything else; on failure remove all of it and raise."""
    _prepare_new(att)
    try:
        tun = open_tun(att.ifname, att.netns, tun_offload.available(), persist=True)
    except NamespaceNotFoundError as error:
        raise OpError(INVALID_NETNS, str(error)) from None
    except OSError as error:
        raise OpError(INTERNAL, f"cannot create TUN {att.ifname} in {att.netns}: {error}") from None
    try:
        _configure(att)
        return _open_udp_and_device(att, tun, ports)
    except BaseException:
        tun.delete()
        raise


def build_again(att: Attachment, ports: PortPool) -> Tunnel:
    """Re-attach to the persistent TUN (or make it again if it went) and rebuild the device."""
    att.routes = att.cfg.allowed_prefixes
    try:
        tun = attach_tun(att.ifname, att.netns, tun_offload.available())
        fresh = False
    except TunError as error:
        if error.errno != errno.ENODEV:
            raise
        _log.warning("%s: %s is gone from %s; creating it again", att.name, att.ifname, att.netns)
        tun = open_tun(att.ifname, att.netns, tun_offload.available(), persist=True)
        fresh = True
    try:
        _configure(att)
        return _open_udp_and_device(att, tun, ports)
    except BaseException:
        tun.delete() if fresh else tun.close()
        raise


def build_kernel(att: Attachment) -> None:
    """Kernel mode: the WireGuard link (cni/kernel.py) on the attachment's port, then MTU, addresses
    and routes as for a TUN; on failure the link is deleted and the error raised."""
    _prepare_new(att)
    kernel.create(
        replace(att.cfg, listen_port=att.listen_port), att.endpoints, att.link, att.netns, att.ifname
    )
    try:
        _configure(att)
    except BaseException as error:
        kernel.delete(att.netns, att.ifname)
        if isinstance(error, OSError) and error.errno == errno.EADDRINUSE:  # the link binds it when up
            raise OpError(
                TRY_AGAIN_LATER, f"UDP port {att.listen_port} was taken on the node meanwhile"
            ) from None
        raise


def remove_kernel_link(att: Attachment) -> bool:
    """Kernel mode: delete the link in the Pod (while `netns` still names its namespace), and one an
    interrupted add left under its temporary name, here or in the Pod."""
    removed = bool(att.link) and kernel.remove_temporary(att.link)
    if _netns_present(att):
        for name in {att.ifname, att.link} - {""}:
            removed = kernel.delete(att.netns, name) or removed
    return removed


def kernel_problems(att: Attachment) -> list[str]:
    return kernel.problems(att.cfg, att.netns, att.ifname) if _netns_present(att) else []


def remove_leftover_link(netns: str, netns_id: tuple[int, int] | None, ifname: str) -> bool:
    """Delete an unattached persistent TUN `ifname` in `netns` (left by a crash or a dead engine).

    Only a TUN nobody serves is touched (attach_tun refuses anything else), and only when `netns`
    still names the namespace it should.
    """
    try:
        if netns_id is not None and netns_identity(netns) != netns_id:
            return False
        tun = attach_tun(ifname, netns)
    except (OSError, ValueError):
        return False
    tun.delete()
    return True


def release(tunnel: Tunnel, delete_link: bool) -> None:
    """Close the fds of a stopped engine (see `_unwatch`); delete the link too, or leave it for a
    later agent. The UAPI server belongs to the loop and is closed there."""
    try:
        tunnel.tun.delete() if delete_link else tunnel.tun.close()
    finally:
        tunnel.udp.close()


def _netns_present(att: Attachment) -> bool:
    """True while the attachment's netns path still names the namespace it was added in."""
    try:
        return netns_identity(att.netns) == att.netns_id
    except OSError:
        return False


def link_problems(att: Attachment) -> list[str]:
    if not _netns_present(att):
        return [f"network namespace {att.netns} is gone"]
    exists, flags, addresses = netconfig.link_state(att.netns, att.ifname)
    if not exists:
        return [f"{att.ifname} does not exist in {att.netns}"]
    problems = []
    if "UP" not in flags:
        problems.append(f"{att.ifname} is down")
    elif "LOWER_UP" not in flags:
        why = ": no engine is attached to its TUN" if att.mode == USERSPACE else ""
        problems.append(f"{att.ifname} has no carrier{why}")
    for address in att.cfg.addresses:
        if address not in addresses:
            problems.append(f"{att.ifname} lacks address {address}")
    present = {route.dst for route in netconfig.list_routes(att.netns, att.ifname)}
    for route in att.routes:
        if route not in present and str(route) not in att.skipped:
            problems.append(f"route {route} through {att.ifname} is missing")
    return problems


def _unwatch(tunnel: Tunnel) -> None:
    """On the loop: stop watching the tunnel's fds and close its UAPI server, before `release`.

    A normally ended engine has done this itself; one that raised or was cancelled may not have.
    """
    loop = asyncio.get_running_loop()
    for fd in [tunnel.tun.fd, *(sock.fileno() for sock in tunnel.udp.sockets)]:
        if fd >= 0:
            loop.remove_reader(fd)
    tunnel.engine.uapi.close()


def _remove_stale_uapi(name: str) -> None:
    path = socket_path(name)
    if path.exists() and not socket_in_use(path):
        path.unlink(missing_ok=True)


# --- the agent -------------------------------------------------------------------------------


class KeyLocks:
    """One asyncio lock per attachment key, forgotten once nobody holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[Key, tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, key: Key) -> AsyncIterator[None]:
        lock, users = self._locks.get(key) or (asyncio.Lock(), 0)
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)


class InProcessLink:
    """How the plugin reaches this agent when it runs inside it (the `cni` op): no socket, no JSON,
    and so no path a network config could point elsewhere."""

    def __init__(self, agent: Agent, loop: asyncio.AbstractEventLoop) -> None:
        self.agent, self.loop = agent, loop
        self.socket_path = agent.socket_path

    def call(
        self, op: str, payload: dict[str, Any], start: bool = True, parsed: InterfaceConfig | None = None
    ) -> dict[str, Any]:
        del start  # this agent runs already
        request = {**payload, "op": op}
        if parsed is not None:
            request[PARSED] = parsed  # an object: no request off the socket (JSON) can carry one
        return asyncio.run_coroutine_threadsafe(self.agent.handle(request), self.loop).result()

    def config_turn(self, size: int) -> AbstractContextManager[None]:
        return self.agent.large_configs.turn_from_thread(size, self.loop)


class Agent:
    def __init__(
        self,
        state_dir: Path,
        node_policy: NodePolicy | None = None,
        live_options: LiveOptions | None = None,
        client: ApiClient | None = None,
    ) -> None:
        self.policy = node_policy or NodePolicy()
        self.store = StateStore(state_dir)
        self.ports = PortPool(*self.policy.port_range)
        self.attachments: dict[Key, Attachment] = {}
        # private key -> the attachment that has it, its add still running or done
        self.claims: dict[bytes, Attachment] = {}
        self.locks = KeyLocks()
        self.large_configs = LargeConfigLane(self.policy.large_config_bytes, self.policy.large_config_share)
        self.executor = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="pywg-agent")
        self.large_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pywg-agent-large")
        self.resolver = ThreadPoolExecutor(max_workers=RESOLVERS, thread_name_prefix="pywg-agent-dns")
        self.cni_executor = ThreadPoolExecutor(max_workers=CNI_WORKERS, thread_name_prefix="pywg-agent-cni")
        self.stopped = asyncio.Event()
        self.socket_path = policy.DEFAULT_SOCKET  # set by `serve`
        # Live operations (cni/live.py): only with the agent's own API credentials.
        self.live = live_options or LiveOptions()
        self.client = client
        self.api_executor = ThreadPoolExecutor(max_workers=API_WORKERS, thread_name_prefix="pywg-agent-api")
        self.leases: Leases | None = None
        self.events: EventRecorder | None = None
        if client is not None:
            namespace = live.lease_namespace(self.live, client)
            self.leases = Leases(client, namespace, self.live.node_name, self.live.lease_duration)
            self.events = EventRecorder(
                client, self.live.node_name, self.live.event_interval, self.api_executor
            )
            self.events.on_api_error = self.count_api_error
        self.watches: dict[SecretRef, SecretWatch] = {}
        self.watch_counters = WatchCounters()
        self.api_errors: Counter[str] = Counter()
        self.health: dict[Key, AttachmentHealth] = {}
        self.metrics: AgentMetrics | None = None  # set by run_agent with --metrics
        self._background: set[asyncio.Task[Any]] = set()

    async def blocking(self, work: Callable[[], T], large: bool = False) -> T:
        """`work` in a worker thread; a large config's in the one thread of its own, so that it
        never takes the workers of everybody else's (cni/pacing.py)."""
        pool = self.large_executor if large else self.executor
        return await asyncio.get_running_loop().run_in_executor(pool, work)

    def is_large(self, att: Attachment) -> bool:
        return self.large_configs.large(len(att.text))

    async def api(self, work: Callable[[], T]) -> T:
        """An API request of the agent's own, in its pool (a slow API server holds no netlink work)."""
        return await asyncio.get_running_loop().run_in_executor(self.api_executor, work)

    def count_api_error(self, operation: str) -> None:
        self.api_errors[operation] += 1

    def background(self, work: Coroutine[Any, Any, Any], what: str) -> None:
        """Run `work` on the loop without waiting for it; a failure is logged."""

        def done(task: asyncio.Task[Any]) -> None:
            self._background.discard(task)
            if not task.cancelled() and task.exception() is not None:
                _log.error("%s failed: %s", what, task.exception())

        task = asyncio.get_running_loop().create_task(work)
        self._background.add(task)
        task.add_done_callback(done)

    # requests

    async def handle(self, request: Any) -> dict[str, Any]:
        if not isinstance(request, dict):
            return _error(DECODING_FAILURE, "a request must be a JSON object")
        op = request.get("op")
        handlers: dict[str, Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]] = {
            "add": self.op_add,
            "del": self.op_del,
            "check": self.op_check,
            "gc": self.op_gc,
            "cni": self.op_cni,
        }
        try:
            if op == "status":
                return self.op_status()
            if op == "list":
                return self.op_list()
            if op not in handlers:
                return _error(
                    UNSUPPORTED_FIELD, f"unknown op {op!r}; expected add, del, check, gc, status, list, cni"
                )
            if self.metrics is None or op == "cni":
                return await handlers[op](request)
            started = time.perf_counter()
            try:
                return await handlers[op](request)
            finally:
                self.metrics.observe(op, time.perf_counter() - started)
        except OpError as error:
            _log.info("op %s refused: %s", op, error.msg)
            return _error(error.code, error.msg)
        except Exception as error:
            _log.exception("op %s failed", op)
            return _error(INTERNAL, f"internal error in the node agent ({type(error).__name__}: {error})")

    def admit(self, text: str, source: str, parsed: InterfaceConfig | None = None) -> InterfaceConfig:
        """The config of an add, if the node's policy admits it (OpError code 7 naming the limit);
        `parsed`: `text` as the plugin in this process parsed it already."""
        size = len(text.encode("utf-8", "surrogateescape"))
        if size > self.policy.max_config_bytes:
            raise OpError(
                INVALID_NETWORK_CONFIG,
                f"the config has {size} bytes; this node allows at most {self.policy.max_config_bytes} "
                "(the node agent's --max-config-bytes)",
            )
        try:
            cfg = parsed if parsed is not None else parse_config(text, source=source, require_address=True)
            self.policy.check(cfg)
        except (ConfigError, PolicyError) as error:
            raise OpError(INVALID_NETWORK_CONFIG, str(error)) from None
        return cfg

    async def op_add(self, request: dict[str, Any]) -> dict[str, Any]:
        text = _string(request, "config")
        if isinstance(request.get(PARSED), InterfaceConfig):  # InProcessLink: the plugin holds the turn
            return await self.add(request, text)
        async with self.large_configs.turn(len(text)):
            return await self.add(request, text)

    async def add(self, request: dict[str, Any], text: str) -> dict[str, Any]:
        cid, ifname = _attachment_key(request)
        netns, netns_id = _pod_netns(_string(request, "netns"))
        source = str(request.get("source") or "config")[:200]  # how errors name it ("secret NS/NAME")
        parsed = request.get(PARSED)
        if not isinstance(parsed, InterfaceConfig):
            parsed = None
        large = self.large_configs.large(len(text))
        cfg = await self.blocking(lambda: self.admit(text, source, parsed), large)  # not on the loop
        pod = str(request.get("pod") or f"container {cid[:12]}")
        network = request.get("network")
        att = Attachment(cid, ifname, netns, netns_id, pod, cfg, [None] * len(cfg.peers), text=text)
        att.network = network if isinstance(network, str) else ""
        att.secret = _secret_ref(request.get("secret"))
        uid = request.get("pod_uid")
        att.pod_uid = uid if isinstance(uid, str) else ""
        async with self.locks.hold(att.key):
            existing = self.attachments.get(att.key)
            if existing is not None:
                raise OpError(
                    INVALID_ENVIRONMENT,
                    f"container {cid} already has {ifname} from this agent (pod {existing.pod})",
                )
            await self.claim(att)
            try:
                await self.lease_acquire(att, cfg.public_key)
                try:
                    await self.add_claimed(att, request.get("mode"))
                except BaseException:
                    self.lease_release(att, cfg.public_key)
                    raise
            except BaseException:
                self.unclaim(att)
                raise
            self.watch(att, _secret_version(request.get("secret")))
        what = (att.name, ifname, att.mode, netns, pod, att.listen_port)
        _log.info("added %s: %s (%s) in %s for pod %s, UDP port %s", *what)
        warnings = list(cfg.warnings)
        warnings += [
            f"route {r} already goes elsewhere in the pod; added through {ifname} with metric "
            f"{SHADOWED_METRIC}, so the pod's own route keeps precedence"
            for r in att.shadowed
        ]
        warnings += [f"route {r} left out: IPv6 is disabled in the pod" for r in att.skipped]
        return {
            "ok": True,
            "name": att.name,
            "mode": att.mode,
            "listen_port": att.listen_port,
            "interface": ifname,
            "netns": netns,
            "mtu": cfg.mtu or DEFAULT_MTU,
            "public_key": encode_key(cfg.public_key),
            "addresses": [str(a) for a in cfg.addresses],
            "routes": [str(r) for r in att.routes if str(r) not in att.skipped],
            "warnings": warnings,
        }

    async def claim(self, att: Attachment) -> None:
        """Make `att` the one attachment of this node with its private key, or refuse naming the pod
        that has it. One whose sandbox is gone but whose DEL never came (Multus skips DEL without its
        cache) is removed first: the Pod's next sandbox must not be locked out of its own config."""
        public = att.cfg.public_key
        while (other := self.claims.get(public)) is not None:
            if self.attachments.get(other.key) is not other or _netns_present(other):
                raise OpError(
                    INVALID_NETWORK_CONFIG,
                    f"config already in use by pod {other.pod} on this node; each Pod needs its own "
                    "WireGuard config",
                )
            _log.info("removing %s of pod %s: its namespace is gone", other.name, other.pod)
            async with self.locks.hold(other.key):
                if self.attachments.get(other.key) is other:
                    await self.remove(other)
        self.claims[public] = att

    def unclaim(self, att: Attachment) -> None:
        if self.claims.get(att.cfg.public_key) is att:
            del self.claims[att.cfg.public_key]

    async def add_claimed(self, att: Attachment, mode: Any) -> None:
        """Pick the mode and the port, resolve, then build and start; all or nothing."""
        att.mode = await self.pick_mode(mode)
        att.link = kernel.temporary_name() if att.mode == KERNEL else ""
        att.listen_port = self.take_port(att.cfg)
        try:
            # Host names to look up: the state file first (incomplete: a crash while waiting for
            # DNS is cleaned up). Else one trip to a worker for state file, link and state file:
            # under a burst of ADDs every hand-over between threads costs GIL contention.
            recorded = bool(host_names(att.cfg))
            if recorded:
                await self.blocking(lambda: self.store.save(att), self.is_large(att))
            try:
                att.endpoints = await resolve_concurrently(
                    att.cfg, self.resolver, self.policy.dns_timeout, RESOLVE_PARALLEL
                )
            except BaseException as error:
                if recorded:
                    self.store.remove(att.name)
                if isinstance(error, ResolveTimeout):
                    raise OpError(TRY_AGAIN_LATER, str(error)) from None
                if isinstance(error, ConfigError):  # a name without an answer
                    raise OpError(INVALID_NETWORK_CONFIG, str(error)) from None
                raise
            await self.blocking(lambda: self.build_recorded(att, recorded), self.is_large(att))
            if att.mode == USERSPACE:
                try:
                    await self.start_engine(att)
                except BaseException:
                    await self.stop_engine(att, delete_link=True)
                    self.store.remove(att.name)
                    raise
        except BaseException:
            self.ports.release(att.listen_port)
            raise
        self.attachments[att.key] = att

    def build_recorded(self, att: Attachment, recorded: bool) -> None:
        """In a worker: the state file (incomplete: a crash from here on is cleaned up) unless
        `recorded` already, the link, then the state file again, complete; on failure none of them
        is left."""
        if not recorded:
            self.store.save(att)
        try:
            if att.mode == KERNEL:
                build_kernel(att)
            else:
                att.tunnel = build_new(att, self.ports)
        except BaseException as error:
            self.store.remove(att.name)
            if isinstance(error, ConfigError | netconfig.IPv6UnavailableError):
                raise OpError(INVALID_NETWORK_CONFIG, str(error)) from None
            if isinstance(error, SetupError | OSError):
                raise OpError(INTERNAL, str(error)) from None
            raise
        att.complete = True
        try:
            self.store.save(att)
        except BaseException:
            if att.mode == KERNEL:
                remove_kernel_link(att)
            elif att.tunnel is not None:
                tunnel, att.tunnel = att.tunnel, None
                release(tunnel, delete_link=True)
            self.store.remove(att.name)
            raise

    def take_port(self, cfg: InterfaceConfig) -> int:
        """The config's listenPort (the policy checked it is in range) or a free one of the range."""
        wanted = cfg.listen_port
        if not wanted:
            port = self.ports.take()
            if port is None:
                raise OpError(
                    TRY_AGAIN_LATER,
                    f"no free UDP port left in this node's range {self.policy.port_range_text}",
                )
            return port
        if not self.ports.hold(wanted):
            raise OpError(INVALID_NETWORK_CONFIG, f"listenPort {wanted} is used by another Pod on this node")
        if not udp_port_free(wanted):
            self.ports.release(wanted)
            raise OpError(INVALID_NETWORK_CONFIG, f"listenPort {wanted} is already in use on the node")
        return wanted

    async def pick_mode(self, requested: Any) -> str:
        """kernel or userspace for the request's `mode`; auto is kernel where the node can make a
        WireGuard link (probed once), else userspace."""
        requested = requested or "auto"
        if requested not in plugin.MODES:
            choices = ", ".join(plugin.MODES)
            raise OpError(UNSUPPORTED_FIELD, f"mode: {str(requested)[:40]!r} is not one of {choices}")
        if requested == USERSPACE:
            return USERSPACE
        probed, why = kernel.probed()
        if not probed:  # the first time: a link made and deleted, in a worker
            why = await self.blocking(kernel.missing)
        if why is None:
            return KERNEL
        if requested == KERNEL:
            raise OpError(
                UNSUPPORTED_FIELD,
                f'mode "kernel": {why}; use "mode": "userspace", or "auto" to use the kernel where it can',
            )
        return USERSPACE

    async def op_del(self, request: dict[str, Any]) -> dict[str, Any]:
        key = _attachment_key(request)
        netns, network = request.get("netns") or None, request.get("network")
        async with self.locks.hold(key):
            att = self.attachments.get(key)
            if att is not None:
                if isinstance(network, str) and network and att.network and network != att.network:
                    _log.info(
                        "del of %s for network %r: it belongs to %r, kept", att.name, network, att.network
                    )
                    return {"ok": True, "removed": False}
                async with self.large_configs.turn(len(att.text)):  # taking a hub down costs too
                    await self.remove(att)
                return {"ok": True, "removed": True}
            name = attachment_name(*key)
            self.store.remove(name)
            removed = False
            if isinstance(netns, str):
                removed = await self.blocking(lambda: remove_leftover_link(netns, None, key[1]))
            _remove_stale_uapi(name)
            return {"ok": True, "removed": removed}

    async def op_check(self, request: dict[str, Any]) -> dict[str, Any]:
        cid, ifname = key = _attachment_key(request)
        netns_spec = request.get("netns")
        async with self.locks.hold(key):
            att = self.attachments.get(key)
            if att is None:
                return {"ok": False, "problems": [f"the node agent has no {ifname} for container {cid}"]}
            problems = []
            if isinstance(netns_spec, str) and netns_spec:
                try:
                    if netns_identity(netns_spec) != att.netns_id:
                        problems.append(f"{ifname} was added in another network namespace than {netns_spec}")
                except OSError as error:
                    problems.append(str(error))
            if att.mode == USERSPACE:
                problems += self.engine_problems(att)
            try:
                problems += await self.blocking(lambda: link_problems(att))
                if att.mode == KERNEL:
                    problems += await self.blocking(lambda: kernel_problems(att))
            except OSError as error:
                problems.append(f"cannot inspect {ifname} in {att.netns}: {error}")
            return {"ok": not problems, "problems": problems}

    def engine_problems(self, att: Attachment) -> list[str]:
        if att.tunnel is None or not att.running:
            return [f"the tunnel of {att.ifname} is not running: {att.dead_reason or 'stopped'}"]
        problems = []
        tunnel = att.tunnel
        gone = tunnel.tun.gone_reason()
        if gone is not None:
            problems.append(f"the TUN of {att.ifname}: {gone}")
        if not tunnel.engine.uapi.still_there():
            problems.append(f"the UAPI socket {tunnel.engine.uapi.path} is gone")
        device, cfg = tunnel.device, att.cfg
        if device.public_key != cfg.public_key:
            problems.append("the engine serves another private key than the config's")
        wanted = {peer.public_key: peer for peer in cfg.peers}
        for key in wanted.keys() - device.peers.keys():
            problems.append(f"peer {encode_key(key)} is missing from the engine")
        for key in device.peers.keys() - wanted.keys():
            problems.append(f"the engine has peer {encode_key(key)}, which is not in the config")
        for key in wanted.keys() & device.peers.keys():
            serving = set(device.allowed_ips.entries_for(device.peers[key]))
            if serving != set(wanted[key].allowed_ips):
                shown = ", ".join(sorted(map(str, serving))) or "none"
                problems.append(f"peer {encode_key(key)} has allowed IPs {shown}, not those of the config")
        return problems

    async def op_gc(self, request: dict[str, Any]) -> dict[str, Any]:
        """Remove `network`'s attachments that `valid` does not list; never another network's."""
        network, valid_list = request.get("network"), request.get("valid")
        if not isinstance(network, str) or not network:
            raise OpError(INVALID_NETWORK_CONFIG, "gc: network (the network config's name) is required")
        if not isinstance(valid_list, list):
            raise OpError(INVALID_NETWORK_CONFIG, "gc: valid must be a list of {containerID, ifname}")
        valid = set()
        for item in valid_list:
            if isinstance(item, dict):
                cid = item.get("containerID", item.get("container_id"))
                valid.add((str(cid), str(item.get("ifname"))))
        removed, errors = [], []
        for att in [a for a in self.attachments.values() if a.network == network and a.key not in valid]:
            async with self.locks.hold(att.key):
                if self.attachments.get(att.key) is not att:
                    continue  # removed meanwhile
                try:
                    await self.remove(att)
                    removed.append(att.name)
                except Exception as error:
                    _log.exception("gc of %s failed", att.name)
                    errors.append(f"{att.ifname} of container {att.container_id}: {error}")
        reply: dict[str, Any] = {"ok": not errors, "removed": removed, "errors": errors}
        if errors:
            reply |= {"code": INTERNAL, "msg": "gc: " + "; ".join(errors)}
        return reply

    async def op_cni(self, request: dict[str, Any]) -> dict[str, Any]:
        """One CNI invocation for cni/entrypoint.c, in a thread of its own pool; the plugin's
        add/del/check/gc come back to this agent through InProcessLink."""
        env, text = request.get("env"), request.get("stdin", "")
        if not isinstance(env, dict) or not isinstance(text, str):
            raise OpError(DECODING_FAILURE, "cni: env must be an object and stdin a string")
        cni_env = {k: v for k, v in env.items() if isinstance(v, str) and k.startswith("CNI_")}
        try:
            stdin = text.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:
            raise OpError(DECODING_FAILURE, "cni: stdin holds a surrogate that escapes no byte") from None
        loop = asyncio.get_running_loop()
        link = InProcessLink(self, loop)
        status, output = await loop.run_in_executor(
            self.cni_executor, lambda: plugin.run(cni_env, stdin, link, self.policy)
        )
        return {"ok": True, "status": status, "stdout": "" if output is None else json.dumps(output) + "\n"}

    def op_status(self) -> dict[str, Any]:
        running = sum(1 for att in self.attachments.values() if att.mode == USERSPACE and att.running)
        links = sum(1 for att in self.attachments.values() if att.mode == KERNEL)
        return {
            "ok": True,
            "tunnels": running,
            "kernel_links": links,
            "attachments": len(self.attachments),
            "pid": os.getpid(),
        }

    def op_list(self) -> dict[str, Any]:
        return {
            "ok": True,
            "attachments": [
                {
                    "container_id": att.container_id,
                    "ifname": att.ifname,
                    "pod": att.pod,
                    "network": att.network,
                    "name": att.name,
                    "mode": att.mode,
                    "netns": att.netns,
                    "listen_port": att.listen_port,
                    "running": att.running,
                }
                for att in self.attachments.values()
            ],
        }

    # live operations (cni/live.py)

    def holder(self, att: Attachment) -> Holder:
        return Holder(att.pod, self.live.node_name, att.name)

    async def lease_acquire(self, att: Attachment, public_key: bytes) -> None:
        """The cluster-wide claim of `public_key` for `att` (its Lease), or OpError naming the Pod
        and node that have it; nothing without the agent's own API credentials."""
        if self.leases is None:
            return
        leases, holder = self.leases, self.holder(att)
        names = {a.name for a in self.attachments.values()} | {att.name}
        try:
            await self.api(lambda: leases.acquire(public_key, holder, names.__contains__))
        except KeyInUse as error:
            raise OpError(INVALID_NETWORK_CONFIG, str(error)) from None
        except KubernetesError as error:
            self.count_api_error("lease")
            raise OpError(
                TRY_AGAIN_LATER,
                f"cannot make sure no other Pod in the cluster uses this config (its Lease): {error.message}",
            ) from None

    def lease_release(self, att: Attachment, public_key: bytes) -> None:
        """Give the key's Lease up, in the background (a DEL must not wait for the API server; a
        Lease left behind expires, or this node takes it back for the next Pod)."""
        if self.leases is None:
            return
        leases, holder = self.leases, self.holder(att)

        async def release() -> None:
            try:
                await self.api(lambda: leases.release(public_key, holder))
            except KubernetesError as error:
                self.count_api_error("lease")
                _log.warning("%s: giving up the Lease of its key failed: %s", att.name, error.message)

        self.background(release(), f"{att.name}: giving up its Lease")

    async def renew_leases(self) -> None:
        """Renew every attachment's Lease, a third of the Lease's duration apart."""
        assert self.leases is not None
        leases = self.leases
        while True:
            await asyncio.sleep(self.live.lease_duration / 3)
            for att in list(self.attachments.values()):
                if self.attachments.get(att.key) is not att or not att.complete:
                    continue
                key, holder = att.cfg.public_key, self.holder(att)
                try:
                    other = await self.api(lambda key=key, holder=holder: leases.renew(key, holder))
                except KubernetesError as error:
                    self.count_api_error("lease")
                    _log.warning("%s: renewing the Lease of its key failed: %s", att.name, error.message)
                    continue
                if other is not None:
                    self.event(
                        att,
                        "KeyConflict",
                        f"pod {other.pod} on node {other.node} took over this Pod's WireGuard key while this "
                        "node could not renew its Lease; the two tunnels disturb each other: give one of the "
                        "Pods another config",
                        warning=True,
                    )

    def event(self, att: Attachment, reason: str, message: str, warning: bool = False) -> None:
        pod = PodRef.parse(att.pod, att.pod_uid)
        if self.events is not None and pod is not None:
            self.events.record(pod, reason, message, warning)

    def watch(self, att: Attachment, version: str = "") -> None:
        """Follow the attachment's Secret (one watch per Secret, however many attachments use it),
        from `version`, the Secret's resourceVersion as the add read it: a change or a delete
        between that read and the watch's start is seen too."""
        ref = att.secret
        if self.client is None or ref is None or ref in self.watches:
            return
        loop = asyncio.get_running_loop()

        def deliver(obj: dict[str, Any] | None) -> None:
            loop.call_soon_threadsafe(self.secret_seen, ref, obj)

        self.watches[ref] = SecretWatch(
            self.client, ref, deliver, self.watch_counters, self.count_api_error, version
        ).start()

    def unwatch(self, att: Attachment) -> None:
        ref = att.secret
        if ref is None or ref not in self.watches:
            return
        if not any(other.secret == ref for other in self.attachments.values() if other is not att):
            self.watches.pop(ref).stop()

    def secret_seen(self, ref: SecretRef, obj: dict[str, Any] | None) -> None:
        """On the loop: a state of a watched Secret (None: deleted), for each attachment using it."""
        for att in [a for a in self.attachments.values() if a.secret == ref]:
            self.background(self.secret_changed(att, obj), f"{att.name}: applying secret {ref[0]}/{ref[1]}")

    async def secret_changed(self, att: Attachment, obj: dict[str, Any] | None) -> None:
        assert att.secret is not None
        where = f"secret {att.secret[0]}/{att.secret[1]}"
        async with self.locks.hold(att.key):
            if self.attachments.get(att.key) is not att:
                return  # deleted meanwhile
            if obj is None:
                if not att.secret_deleted:
                    att.secret_deleted = True
                    self.event(
                        att,
                        "SecretDeleted",
                        f"{where} was deleted; the tunnel keeps its last config, and applies the Secret "
                        "once it exists again",
                        warning=True,
                    )
                return
            att.secret_deleted = False
            try:
                text = secret_config_text(obj, where)
                async with self.large_configs.turn(len(text)):
                    await self.update(att, text, where)
            except (KubernetesError, OpError) as error:
                why = error.message if isinstance(error, KubernetesError) else error.msg
                _log.warning("%s (pod %s): %s changed but is refused: %s", att.name, att.pod, where, why)
                said = why if why.startswith(where) else f"{where}: {why}"  # parse errors name it already
                self.event(att, "ConfigRejected", f"{said}; the running config stays", warning=True)

    async def update(self, att: Attachment, text: str, where: str) -> None:
        """Apply a changed config to the running attachment, as an ADD would admit it (size, limits,
        policy, the key not in use elsewhere, host names resolving); OpError when refused, and then
        nothing changed. Unchanged peers keep their sessions. The caller holds the lock."""
        if text == att.text:
            return  # the state a watch starts with, or a change of another key of the Secret
        large = self.is_large(att) or self.large_configs.large(len(text))
        cfg = await self.blocking(lambda: self.admit(text, where), large)
        old = att.cfg
        if cfg == old:  # written differently, the same config
            att.text = text
            await self.blocking(lambda: self.store.save(att), large)
            return
        new_key = cfg.public_key != old.public_key
        new_port = att.listen_port
        if new_key:
            other = self.claims.get(cfg.public_key)
            if other is not None and other is not att:
                raise OpError(
                    INVALID_NETWORK_CONFIG,
                    f"config already in use by pod {other.pod} on this node; each Pod needs its own "
                    "WireGuard config",
                )
            self.claims[cfg.public_key] = att
        try:
            if new_key:
                await self.lease_acquire(att, cfg.public_key)
            try:
                if cfg.listen_port and cfg.listen_port != att.listen_port:
                    new_port = self.take_port(cfg)
                try:
                    endpoints = await resolve_concurrently(
                        cfg, self.resolver, self.policy.dns_timeout, RESOLVE_PARALLEL
                    )
                    await self.apply(att, cfg, endpoints, new_port, large)
                except BaseException:
                    if new_port != att.listen_port:
                        self.ports.release(new_port)
                    raise
            except BaseException:
                if new_key:
                    self.lease_release(att, cfg.public_key)
                raise
        except BaseException as error:
            if new_key and self.claims.get(cfg.public_key) is att:
                del self.claims[cfg.public_key]
            if isinstance(error, ConfigError | netconfig.IPv6UnavailableError):
                raise OpError(INVALID_NETWORK_CONFIG, str(error)) from None
            if isinstance(error, OSError | SetupError):
                raise OpError(INTERNAL, f"applying it failed: {error}") from None
            raise
        if new_port != att.listen_port:
            self.ports.release(att.listen_port)
            att.listen_port = new_port
        if new_key:
            self.unclaim_key(old.public_key, att)
            self.lease_release(att, old.public_key)
            self.health.pop(att.key, None)
        summary = _changes(old, cfg)
        att.cfg, att.endpoints, att.text = cfg, endpoints, text
        await self.blocking(lambda: self.store.save(att), large)
        _log.info("%s (pod %s): applied %s: %s", att.name, att.pod, where, summary)
        self.event(att, "ConfigUpdated", f"applied {where}: {summary}")

    async def apply(
        self,
        att: Attachment,
        cfg: InterfaceConfig,
        endpoints: list[Endpoint | None],
        port: int | None,
        large: bool = False,
    ) -> None:
        """Change the running tunnel or link to `cfg`: the WireGuard side first, then addresses and
        routes. A failure part way puts back the old config as far as it can."""
        routes = cfg.allowed_prefixes
        kept = set(routes)
        stale = [route for route in att.routes if route not in kept]
        old_addresses = [address for address in att.cfg.addresses if address not in cfg.addresses]
        live = replace(cfg, listen_port=port)
        if att.mode == KERNEL:
            await self.blocking(lambda: kernel.update(att.netns, att.ifname, live, endpoints), large)
        else:
            tunnel = att.tunnel
            if tunnel is None:
                raise OpError(INTERNAL, f"the tunnel of {att.ifname} is not running: {att.dead_reason}")
            _apply_device(tunnel, live, endpoints)
        try:
            await self.blocking(lambda: _reconfigure(att, cfg, routes, stale, old_addresses), large)
        except BaseException:
            _log.error("%s: the new addresses and routes failed; putting the old config back", att.name)
            old = replace(att.cfg, listen_port=att.listen_port)
            with contextlib.suppress(Exception):
                if att.mode == KERNEL:
                    await self.blocking(
                        lambda: kernel.update(att.netns, att.ifname, old, att.endpoints), large
                    )
                elif att.tunnel is not None:
                    _apply_device(att.tunnel, old, att.endpoints)
                await self.blocking(lambda: _reconfigure(att, att.cfg, att.routes, [], []), large)
            raise
        att.routes = routes

    def unclaim_key(self, public_key: bytes, att: Attachment) -> None:
        if self.claims.get(public_key) is att:
            del self.claims[public_key]

    async def watch_health(self) -> None:
        """Events for peers' handshakes: the first one, failing for a while, working again.
        Userspace tunnels only: the kernel does not say whether it tries."""
        while True:
            await asyncio.sleep(HEALTH_INTERVAL)
            now = time.monotonic()
            for att in self.attachments.values():
                tunnel = att.tunnel
                if att.mode != USERSPACE or tunnel is None:
                    continue
                health = self.health.setdefault(att.key, AttachmentHealth())
                for peer in tunnel.device.peers.values():
                    endpoint = format_endpoint(peer.endpoint) if peer.endpoint else "no endpoint"
                    change = health.observe(
                        peer.public_key,
                        encode_key(peer.public_key),
                        endpoint,
                        peer.last_handshake_ns,
                        peer.handshake_failures,
                        now,
                        self.live.handshake_failing_after,
                    )
                    if change is not None:
                        self.event(att, change.reason, change.message, change.warning)

    # engines

    async def start_engine(self, att: Attachment) -> None:
        """Run the attachment's engine on this loop; return once its UAPI socket is served."""
        assert att.tunnel is not None
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = loop.create_future()

        def on_ready() -> None:
            if not ready.done():
                ready.set_result(None)

        att.stopping, att.dead_reason = False, None
        att.task = loop.create_task(att.tunnel.engine.run(on_ready), name=f"engine {att.name}")
        att.task.add_done_callback(lambda task: self.engine_ended(att, task))
        waiting: set[asyncio.Future[Any]] = {ready, att.task}
        await asyncio.wait(waiting, timeout=READY_TIMEOUT, return_when=asyncio.FIRST_COMPLETED)
        if not ready.done():
            raise OpError(INTERNAL, f"the engine of {att.ifname} did not start: {self.task_outcome(att)}")

    @staticmethod
    def task_outcome(att: Attachment) -> str:
        task = att.task
        if task is None or not task.done():
            return "timed out"
        if task.cancelled():
            return "cancelled"
        error = task.exception()
        return f"{type(error).__name__}: {error}" if error is not None else task.result()

    def engine_ended(self, att: Attachment, task: asyncio.Task[str]) -> None:
        if att.stopping or att.task is not task:
            return
        att.dead_reason = self.task_outcome(att)
        _log.warning("engine of %s (pod %s) stopped: %s", att.name, att.pod, att.dead_reason)
        tunnel, att.tunnel = att.tunnel, None
        if tunnel is not None:
            _unwatch(tunnel)
            asyncio.get_running_loop().create_task(self.release_dead(att, tunnel))

    async def release_dead(self, att: Attachment, tunnel: Tunnel) -> None:
        try:
            await self.blocking(lambda: release(tunnel, delete_link=True))
        except Exception as error:
            _log.error("%s: releasing the stopped tunnel failed: %s", att.name, error)

    async def stop_engine(self, att: Attachment, delete_link: bool) -> None:
        """Stop the engine, then close its TUN (deleting the link or leaving it) and sockets."""
        att.stopping = True
        tunnel, task = att.tunnel, att.task
        if tunnel is not None:
            tunnel.engine.stop("stopped by the node agent")
        if task is not None and not task.done():
            try:
                await asyncio.wait_for(asyncio.shield(task), READY_TIMEOUT)
            except (TimeoutError, asyncio.CancelledError):
                task.cancel()
        att.tunnel = None
        if tunnel is not None:
            _unwatch(tunnel)
            await self.blocking(lambda: release(tunnel, delete_link), self.is_large(att))

    async def remove(self, att: Attachment) -> None:
        """del: engine, link, UAPI socket, state, in that order; missing pieces are fine. The caller
        holds the attachment's lock."""
        tunnel = att.tunnel
        await self.stop_engine(att, delete_link=True)
        if tunnel is not None:
            for peer in tunnel.device.peers.values():
                peer.zero_keys()
        if att.mode == KERNEL:
            await self.blocking(lambda: remove_kernel_link(att), self.is_large(att))
        elif tunnel is None:  # a dead engine or a failed re-attach may have left the link
            await self.blocking(lambda: remove_leftover_link(att.netns, att.netns_id, att.ifname))
        _remove_stale_uapi(att.name)
        self.store.remove(att.name)
        self.attachments.pop(att.key, None)
        self.unclaim(att)
        self.ports.release(att.listen_port)
        self.unwatch(att)
        self.lease_release(att, att.cfg.public_key)
        self.health.pop(att.key, None)
        pod = PodRef.parse(att.pod)
        if self.events is not None and pod is not None:
            self.events.forget(pod)
        _log.info("removed %s (%s of pod %s)", att.name, att.ifname, att.pod)

    # start and stop

    async def load(self) -> list[Attachment]:
        """Take over what the state dir lists: live attachments are this agent's (their keys claimed,
        ports held) before it serves anything; what can no longer be served is cleaned up."""
        live = []
        for att in self.store.load():
            if _netns_present(att) and att.complete:
                self.attachments[att.key] = att
                self.claims[att.cfg.public_key] = att
                if att.listen_port:
                    self.ports.hold(att.listen_port)
                live.append(att)
                continue
            why = "its network namespace is gone" if att.complete else "its add never completed"
            _log.info("cleaning up %s (pod %s): %s", att.name, att.pod, why)
            try:
                if att.mode == KERNEL:
                    await self.blocking(lambda att=att: remove_kernel_link(att))
                elif _netns_present(att):
                    await self.blocking(
                        lambda att=att: remove_leftover_link(att.netns, att.netns_id, att.ifname)
                    )
                _remove_stale_uapi(att.name)
                self.store.remove(att.name)
            except OpError as error:  # its state file cannot go (a read-only state dir): serve the rest
                _log.error("%s (pod %s): %s", att.name, att.pod, error.msg)
        return live

    async def restore(self, live: list[Attachment]) -> None:
        """Re-attach the userspace attachments `load` kept, RESTORE_PARALLEL at a time, and watch
        their Secrets again (what changed meanwhile comes first)."""
        for att in live:
            self.watch(att)
        slots = asyncio.Semaphore(RESTORE_PARALLEL)

        async def one(att: Attachment) -> None:
            async with slots, self.locks.hold(att.key):
                if self.attachments.get(att.key) is att:
                    await self.restore_one(att)

        await asyncio.gather(*(one(att) for att in live))

    async def restore_one(self, att: Attachment) -> None:
        if att.mode == KERNEL:  # the link lives in the Pod by itself: nothing to re-attach
            _log.info(
                "kept %s: kernel WireGuard %s in %s for pod %s", att.name, att.ifname, att.netns, att.pod
            )
            return
        try:
            att.endpoints = await resolve_concurrently(
                att.cfg, self.resolver, self.policy.dns_timeout, RESOLVE_PARALLEL
            )
        except ConfigError as error:
            _log.warning("%s: %s; using the addresses resolved before", att.name, error)
        try:
            att.tunnel = await self.blocking(lambda: build_again(att, self.ports), self.is_large(att))
            try:
                await self.blocking(lambda: self.store.save(att))
            except OpError as error:  # a full or read-only state dir must not keep the tunnel down
                _log.warning("%s: %s; its state file stays as it was", att.name, error.msg)
            await self.start_engine(att)
        except Exception as error:
            att.dead_reason = f"re-attaching after a restart failed: {error}"
            _log.error("%s (pod %s): %s", att.name, att.pod, att.dead_reason)
            await self.stop_engine(att, delete_link=False)
            return
        _log.info("re-attached %s: %s in %s for pod %s", att.name, att.ifname, att.netns, att.pod)

    async def shutdown(self) -> None:
        """Stop every engine within STOP_DEADLINE, keeping links and state for the next agent.

        No lock is taken: operations in flight are abandoned with the process (an add cut short is
        incomplete in its state file, and the next agent removes what it made)."""
        for watch in self.watches.values():
            watch.stop()
        running = [att for att in self.attachments.values() if att.tunnel is not None]
        for att in running:
            att.stopping = True
            assert att.tunnel is not None
            att.tunnel.engine.stop("the node agent is stopping")
        tasks = {att.task for att in running if att.task is not None and not att.task.done()}
        if tasks:
            await asyncio.wait(tasks, timeout=STOP_DEADLINE)
        for att in running:
            tunnel, att.tunnel = att.tunnel, None
            if tunnel is not None:
                _unwatch(tunnel)
                release(tunnel, delete_link=False)  # closing fds: quick, and the workers may be stuck


def _apply_device(tunnel: Tunnel, cfg: InterfaceConfig, endpoints: list[Endpoint | None]) -> None:
    """On the loop: the device to `cfg` (whose listen_port is the port to use), as `wg syncconf`."""
    with tunnel.engine.turn():
        _apply_to_device(tunnel, cfg, endpoints)


def _apply_to_device(tunnel: Tunnel, cfg: InterfaceConfig, endpoints: list[Endpoint | None]) -> None:
    device = tunnel.device
    if cfg.public_key != device.public_key:
        device.set_private_key(cfg.private_key)
    if cfg.listen_port and cfg.listen_port != tunnel.udp.port:
        device.listen_port = tunnel.engine.set_listen_port(cfg.listen_port)
    if cfg.fwmark != tunnel.udp.fwmark:
        tunnel.udp.set_fwmark(cfg.fwmark)
        device.fwmark = cfg.fwmark
    apply_peers(device, cfg, endpoints)
    device.mtu = cfg.mtu or DEFAULT_MTU
    tunnel.config, tunnel.routes = cfg, cfg.allowed_prefixes
    tunnel.engine.flush()


def _changes(old: InterfaceConfig, new: InterfaceConfig) -> str:
    """What a live update changes, in a few words for an Event."""
    before = {peer.public_key: peer for peer in old.peers}
    after = {peer.public_key: peer for peer in new.peers}
    added, removed = len(after.keys() - before.keys()), len(before.keys() - after.keys())
    changed = sum(1 for key in after.keys() & before.keys() if after[key] != before[key])
    parts = [f"{len(new.peers)} peers ({added} added, {removed} removed, {changed} changed)"]
    if new.public_key != old.public_key:
        parts.append(f"new key {encode_key(new.public_key)}")
    if new.addresses != old.addresses:
        parts.append("addresses " + ", ".join(map(str, new.addresses)))
    if (new.mtu, new.listen_port, new.fwmark) != (old.mtu, old.listen_port, old.fwmark):
        parts.append("MTU, listenPort or fwmark changed")
    return "; ".join(parts)


def _secret_ref(value: Any) -> SecretRef | None:
    """The `secret` of an add: {"namespace", "name"} of the Secret the config came from."""
    if not isinstance(value, dict):
        return None
    namespace, name = value.get("namespace"), value.get("name")
    if isinstance(namespace, str) and isinstance(name, str) and namespace and name:
        return namespace, name
    return None


def _secret_version(value: Any) -> str:
    """The resourceVersion of the Secret as the add read it ("" if not known)."""
    version = value.get("resourceVersion") if isinstance(value, dict) else None
    return version if isinstance(version, str) and len(version) <= 64 else ""


def _pod_netns(spec: str) -> tuple[str, tuple[int, int]]:
    """The path and identity of a Pod's network namespace, which must not be the agent's own."""
    try:
        netns = resolve_netns(spec)
        assert netns is not None
        identity = netns_identity(netns)
        own = same_netns(netns)
    except OSError as error:
        raise OpError(INVALID_NETNS, str(error)) from None
    if own:
        raise OpError(INVALID_NETNS, f"{spec} is the node agent's own network namespace")
    return netns, identity


def _error(code: int, msg: str) -> dict[str, Any]:
    return {"ok": False, "code": code, "msg": msg}


def _string(request: dict[str, Any], key: str) -> str:
    value = request.get(key)
    if not isinstance(value, str) or not value:
        raise OpError(INVALID_ENVIRONMENT, f"{request.get('op')}: {key} is required (a non-empty string)")
    return value


def _attachment_key(request: dict[str, Any]) -> Key:
    cid, ifname = _string(request, "container_id"), _string(request, "ifname")
    if not _CONTAINER_ID.fullmatch(cid):
        raise OpError(INVALID_ENVIRONMENT, f"container_id {cid[:80]!r} has characters the CNI spec forbids")
    raw = ifname.encode()
    if len(raw) > 15 or ifname in (".", "..") or any(c in ifname for c in "/: \t\n\0"):
        raise OpError(INVALID_ENVIRONMENT, f"ifname {ifname[:40]!r} is not a valid interface name")
    return cid, ifname


# --- serving the socket ------------------------------------------------------------------------


def _private_dir(path: Path) -> None:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if path.stat().st_mode & 0o077:
        path.chmod(0o700)


def bind_socket(path: Path) -> socket.socket:
    """The listening socket at `path` (0600; a stale one is replaced, a live one refused)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    if path.exists() or path.is_symlink():
        if socket_in_use(path):
            raise FileExistsError(errno.EADDRINUSE, f"another node agent already serves {path}")
        path.unlink()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    os.chmod(path, 0o600)
    listener.listen(128)
    listener.setblocking(False)
    return listener


async def serve(agent: Agent, sock_path: Path) -> int:
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, agent.stopped.set)
    loop.add_signal_handler(signal.SIGHUP, lambda: None)
    listener = bind_socket(sock_path)
    agent.socket_path = sock_path
    inode = sock_path.stat().st_ino

    async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                try:
                    request = json.loads(line)
                except (ValueError, RecursionError):  # not JSON, or nested too deeply
                    reply = _error(DECODING_FAILURE, "a request must be one JSON object on one line")
                else:
                    reply = await agent.handle(request)
                writer.write(json.dumps(reply).encode() + b"\n")
                await writer.drain()
        except ValueError:  # a line over the limit
            too_long = _error(
                INVALID_NETWORK_CONFIG, f"the request is longer than the node agent's {MAX_REQUEST} bytes"
            )
            writer.write(json.dumps(too_long).encode() + b"\n")
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()

    kept = await agent.load()  # before serving: a request must not race the attachments it takes over
    server = await asyncio.start_unix_server(client, sock=listener, limit=MAX_REQUEST)
    _log.info("serving %s (pid %d)", sock_path, os.getpid())
    restoring = loop.create_task(agent.restore(kept))
    restoring.add_done_callback(lambda _: _log.info("%d attachments after start", len(agent.attachments)))
    if agent.leases is not None:
        agent.background(agent.renew_leases(), "renewing the key Leases")
    if agent.events is not None:
        agent.background(agent.watch_health(), "watching handshakes")
    if agent.metrics is not None:
        agent.metrics.server.start()
        _log.info("metrics at %s", agent.metrics.server.url)
    await agent.stopped.wait()
    _log.info("stopping: the tunnels' links and state stay for the next agent")
    server.close()
    with contextlib.suppress(OSError):
        if sock_path.stat().st_ino == inode:
            sock_path.unlink()
    await agent.shutdown()
    return 0


def _lock(state_dir: Path) -> int | None:
    # Read-only: flock needs no write access, and a file open for writing would keep the state dir's
    # filesystem from being remounted read-only, or the agent from starting on one.
    fd = os.open(state_dir / "agent.lock", os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def run_agent(
    state_dir: Path,
    sock_path: Path,
    node_policy: NodePolicy | None = None,
    live_options: LiveOptions | None = None,
    metrics_address: str | None = None,
) -> int:
    os.umask(0o077)
    disable_core_dumps()
    sys.setswitchinterval(SWITCH_INTERVAL)
    _private_dir(state_dir)
    lock = _lock(state_dir)
    if lock is None:
        _log.error("another node agent uses %s", state_dir)
        return EXIT_ALREADY_RUNNING
    options = live_options or LiveOptions()
    try:
        client = live.agent_client(options)
    except KubernetesError as error:
        _log.error("the agent's Kubernetes credentials: %s", error.message)
        os.close(lock)
        return EXIT_USAGE
    if client is None:
        _log.info(
            "no Kubernetes credentials: configs are read at ADD only, keys are unique on this node only"
        )

    async def main() -> int:
        agent = Agent(state_dir, node_policy, options, client)
        if metrics_address:
            from cni.metrics import AgentMetrics  # prometheus-client only when asked for

            try:
                agent.metrics = AgentMetrics(agent, asyncio.get_running_loop(), metrics_address)
            except (OSError, ValueError) as error:
                _log.error("--metrics %s: %s", metrics_address, error)
                return EXIT_USAGE
        return await serve(agent, sock_path)

    try:
        return uvloop.run(main())
    except FileExistsError as error:
        _log.error("%s", error.strerror)
        return EXIT_ALREADY_RUNNING
    finally:
        os.close(lock)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m cni.agent", description=__doc__.split("\n\n")[0])
    parser.add_argument("--state-dir", type=Path, default=policy.DEFAULT_STATE_DIR)
    parser.add_argument("--socket", type=Path, default=None, help="default: <state-dir>/agent.sock")
    parser.add_argument("--supervise", action="store_true", help="run the agent as a restarted child")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    parser.add_argument(
        "--metrics",
        metavar="ADDRESS:PORT",
        help="serve Prometheus metrics at http://ADDRESS:PORT/metrics (e.g. 0.0.0.0:9587); off by default",
    )
    policy.add_arguments(parser)
    live.add_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        node_policy = policy.from_arguments(args)
        live_options = live.from_arguments(args)
        if args.metrics:
            from pywg.runtime.metrics import parse_address

            parse_address(args.metrics)
    except ValueError as error:  # PolicyError, MetricsAddressError
        parser.print_usage(sys.stderr)
        print(f"{parser.prog}: {error}", file=sys.stderr)
        return EXIT_USAGE
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s pywg-cni-agent[%(process)d] %(levelname)s %(message)s"
    )
    state_dir = args.state_dir.absolute()
    sock_path = (args.socket or state_dir / "agent.sock").absolute()
    if args.supervise:
        # The supervisor needs none of what this module imports: exec it afresh, so that the
        # process that stays beside the worker is a bare interpreter (~10 MB, not ~45 MB).
        worker = [a for a in (argv if argv is not None else sys.argv[1:]) if a != "--supervise"]
        worker += ["--state-dir", str(state_dir), "--socket", str(sock_path)]  # absolute: the child's cwd
        os.execv(sys.executable, [sys.executable, "-m", "cni.supervisor", *worker])
    status = run_agent(state_dir, sock_path, node_policy, live_options, args.metrics)
    # Worker threads may be stuck in netlink or DNS work of an operation SIGTERM abandoned: leave
    # without joining them, so the agent is gone within STOP_DEADLINE.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


if __name__ == "__main__":
    raise SystemExit(main())
