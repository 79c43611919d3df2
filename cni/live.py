"""The node agent's live operations with the Kubernetes API (issue 12): the Leases that make a private
key one Pod's in the whole cluster, Events on the Pods, and watches of the Secrets attachments use.

The agent's own identity talks to the API: `--kubeconfig` (the operator's file), else the in-cluster
ServiceAccount of its Pod (the DaemonSet's). Without either, none of this runs: a private key is then
one Pod's on this node only, and configs are read once, at ADD.

Leases. One coordination.k8s.io/v1 Lease per private key in use, in the agent's namespace
(`--lease-namespace`, default $POD_NAMESPACE from the downward API, else the ServiceAccount's
namespace), named `pywg-key-` + 32 hex digits of sha256(public key): never anything of the private
key. holderIdentity is the Pod (namespace/name); annotations name the node and the attachment. The
agent renews its Leases every third of `--lease-duration` (default LEASE_SECONDS) and gives them up
(an empty holder) at DEL. A Lease another node's agent stopped renewing is taken over once its
renewTime is `--lease-duration` old: that is how long a key stays locked after its node died. A
Lease this node holds for an attachment this agent no longer has (a crash between DEL and release)
is taken over at once.

Events. `EventRecorder.record(pod, reason, message)` writes a core/v1 Event on the Pod, as
`kubectl describe pod` lists them: the first of a reason at once, later ones of the same reason on
the same Pod at most once per `--event-interval` (default EVENT_SECONDS), as one patch of the
Event's count, message and lastTimestamp. So a flapping peer costs the API server one write a minute
per Pod and reason, and the count still says how often it happened.

Watches. `SecretWatch` follows one Secret (by name, in its namespace) in a thread of its own: the
client is synchronous (docs/design.md "Kubernetes API client"), and a watch mostly waits. It resumes
from the last resourceVersion it saw after a disconnect (backing off up to WATCH_BACKOFF_MAX), and
after 410 Gone it reads the Secret again (a GET, so a deletion missed meanwhile is seen) and watches
from now. What it sees goes to the agent's loop.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import hashlib
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cni.k8s import ApiClient, KubernetesError, Watch
from cni.kubeconfig import SERVICE_ACCOUNT_DIR, in_cluster, load_kubeconfig

LEASE_SECONDS = 60
EVENT_SECONDS = 60.0
HANDSHAKE_FAILING_SECONDS = 120.0
LEASE_PREFIX = "pywg-key-"
NODE_ANNOTATION = "pywg.dev/node"
ATTACHMENT_ANNOTATION = "pywg.dev/attachment"
COMPONENT = "pywg-cni"
WATCH_BACKOFF_MIN, WATCH_BACKOFF_MAX = 0.5, 30.0
NODE_ENV, NAMESPACE_ENV = "NODE_NAME", "POD_NAMESPACE"

_log = logging.getLogger("pywg-cni-agent")


# --- the operator's options ---------------------------------------------------------------------


@dataclass(frozen=True)
class LiveOptions:
    kubeconfig: Path | None = None
    node_name: str = ""
    lease_namespace: str = ""
    lease_duration: int = LEASE_SECONDS
    event_interval: float = EVENT_SECONDS
    handshake_failing_after: float = HANDSHAKE_FAILING_SECONDS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("Kubernetes (live Secret updates, cluster-wide key Leases, Events)")
    group.add_argument(
        "--kubeconfig",
        type=Path,
        help="the agent's own credentials (default: the in-cluster ServiceAccount when in a Pod; "
        "without either, the agent makes no API calls of its own)",
    )
    group.add_argument(
        "--node-name", default="", help=f"this node's name (default: ${NODE_ENV}, else the host name)"
    )
    group.add_argument(
        "--lease-namespace",
        default="",
        help=f"where the key Leases are (default: ${NAMESPACE_ENV}, else the ServiceAccount's namespace)",
    )
    group.add_argument(
        "--lease-duration",
        type=int,
        default=LEASE_SECONDS,
        help="seconds after which another node may take over a key whose agent stopped renewing "
        "(%(default)s)",
    )
    group.add_argument(
        "--event-interval",
        type=float,
        default=EVENT_SECONDS,
        help="at most one Event write per Pod and reason this often, counts aggregated (%(default)s s)",
    )
    group.add_argument(
        "--handshake-failing-after",
        type=float,
        default=HANDSHAKE_FAILING_SECONDS,
        help="seconds of unanswered handshakes before a HandshakeFailing Event (%(default)s)",
    )


def from_arguments(args: argparse.Namespace) -> LiveOptions:
    if args.lease_duration < 3:
        raise ValueError("--lease-duration must be at least 3 (seconds)")
    if not args.event_interval > 0 or not args.handshake_failing_after > 0:
        raise ValueError("--event-interval and --handshake-failing-after must be positive")
    return LiveOptions(
        kubeconfig=args.kubeconfig,
        node_name=args.node_name or os.environ.get(NODE_ENV, "") or socket.gethostname(),
        lease_namespace=args.lease_namespace or os.environ.get(NAMESPACE_ENV, ""),
        lease_duration=args.lease_duration,
        event_interval=args.event_interval,
        handshake_failing_after=args.handshake_failing_after,
    )


def agent_client(options: LiveOptions) -> ApiClient | None:
    """The agent's own API client (kept connections), or None when it has no credentials."""
    if options.kubeconfig is not None:
        client = load_kubeconfig(str(options.kubeconfig))
    elif os.environ.get("KUBERNETES_SERVICE_HOST"):
        client = in_cluster()
    else:
        return None
    client.keep_alive = True
    return client


def lease_namespace(options: LiveOptions, client: ApiClient) -> str:
    if options.lease_namespace:
        return options.lease_namespace
    with contextlib.suppress(OSError, UnicodeDecodeError):
        found = (SERVICE_ACCOUNT_DIR / "namespace").read_text(encoding="utf-8").strip()
        if found:
            return found
    return client.namespace


# --- Pods and Secrets ---------------------------------------------------------------------------


@dataclass(frozen=True)
class PodRef:
    namespace: str
    name: str
    uid: str = ""

    @classmethod
    def parse(cls, pod: str, uid: str = "") -> PodRef | None:
        """The Pod of an attachment's "namespace/name"; None for a container outside Kubernetes."""
        namespace, sep, name = pod.partition("/")
        return cls(namespace, name, uid) if sep and namespace and name and "/" not in name else None


SecretRef = tuple[str, str]  # (namespace, name)


# --- Leases -------------------------------------------------------------------------------------


class KeyInUse(Exception):
    """Another Pod holds the key's Lease; the message names it and its node."""


def lease_name(public_key: bytes) -> str:
    return LEASE_PREFIX + hashlib.sha256(public_key).hexdigest()[:32]


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _micro_time(moment: datetime.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse_time(text: Any) -> datetime.datetime | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


@dataclass(frozen=True)
class Holder:
    """Who a Lease is for: the Pod, its node and the attachment (an agent's name for it)."""

    pod: str
    node: str
    attachment: str


class Leases:
    """The key Leases of one agent; every method blocks (run them in a worker thread)."""

    def __init__(self, client: ApiClient, namespace: str, node: str, duration: int) -> None:
        self.client, self.namespace, self.node, self.duration = client, namespace, node, duration

    def acquire(self, public_key: bytes, holder: Holder, ours: Callable[[str], bool]) -> None:
        """Make the key's Lease `holder`'s, or raise KeyInUse naming who has it. `ours(attachment)`
        says whether this agent still has an attachment: a Lease of this node for one it has not is
        stale. KubernetesError when the API server cannot be asked."""
        name = lease_name(public_key)
        for _ in range(3):  # a 409 means someone wrote it meanwhile: read again
            lease = self.client.get_lease(self.namespace, name)
            now = _now()
            if lease is None:
                try:
                    self.client.create_lease(self.namespace, self._lease(name, holder, now, None))
                    return
                except KubernetesError as error:
                    if error.status != 409:
                        raise
                    continue
            spec = lease.get("spec") or {}
            current = _holder(lease)
            if current is not None and current != holder and self._held(spec, current, now, ours):
                raise KeyInUse(
                    f"config already in use by pod {current.pod} on node {current.node or 'unknown'} (Lease "
                    f"{self.namespace}/{name}); each Pod needs its own WireGuard config"
                )
            transitions = int(spec.get("leaseTransitions") or 0) + (current != holder)
            try:
                self.client.update_lease(self.namespace, self._lease(name, holder, now, lease, transitions))
                return
            except KubernetesError as error:
                if error.status != 409:
                    raise
        raise KubernetesError(11, f"the Lease {self.namespace}/{name} changed under us three times")

    def _held(
        self, spec: dict[str, Any], current: Holder, now: datetime.datetime, ours: Callable[[str], bool]
    ) -> bool:
        """Whether `current` still holds a Lease: renewed within its duration, and if it is this
        node's, for an attachment this agent has."""
        if current.node == self.node and not ours(current.attachment):
            return False
        renewed = _parse_time(spec.get("renewTime")) or _parse_time(spec.get("acquireTime"))
        duration = spec.get("leaseDurationSeconds")
        if renewed is None or not isinstance(duration, int):
            return False
        return now < renewed + datetime.timedelta(seconds=duration)

    def renew(self, public_key: bytes, holder: Holder) -> Holder | None:
        """Renew the key's Lease; None if done, else the holder another agent put there (it took the
        Lease over while we could not renew it). A missing Lease is created again."""
        name = lease_name(public_key)
        lease = self.client.get_lease(self.namespace, name)
        now = _now()
        if lease is None:
            self.client.create_lease(self.namespace, self._lease(name, holder, now, None))
            return None
        current = _holder(lease)
        if current is not None and current != holder:
            return current
        spec = lease.get("spec") or {}
        self.client.update_lease(
            self.namespace, self._lease(name, holder, now, lease, int(spec.get("leaseTransitions") or 0))
        )
        return None

    def release(self, public_key: bytes, holder: Holder) -> None:
        """Give the Lease up (an empty holder) if it is still `holder`'s."""
        name = lease_name(public_key)
        lease = self.client.get_lease(self.namespace, name)
        if lease is None or _holder(lease) != holder:
            return
        lease["spec"] = {**(lease.get("spec") or {}), "holderIdentity": None, "renewTime": None}
        with contextlib.suppress(KubernetesError):  # taken over meanwhile: not ours to give up
            self.client.update_lease(self.namespace, lease)

    def _lease(
        self,
        name: str,
        holder: Holder,
        now: datetime.datetime,
        previous: dict[str, Any] | None,
        transitions: int = 0,
    ) -> dict[str, Any]:
        stamp = _micro_time(now)
        metadata: dict[str, Any] = {
            "name": name,
            "labels": {"app.kubernetes.io/name": COMPONENT},
            "annotations": {NODE_ANNOTATION: holder.node, ATTACHMENT_ANNOTATION: holder.attachment},
        }
        spec: dict[str, Any] = {
            "holderIdentity": holder.pod,
            "leaseDurationSeconds": self.duration,
            "renewTime": stamp,
            "leaseTransitions": transitions,
        }
        if previous is not None:
            metadata["resourceVersion"] = previous["metadata"]["resourceVersion"]
            old_spec = previous.get("spec") or {}
            same = _holder(previous) == holder
            spec["acquireTime"] = (
                old_spec.get("acquireTime") if same and old_spec.get("acquireTime") else stamp
            )
        else:
            spec["acquireTime"] = stamp
        return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": metadata, "spec": spec}


def _holder(lease: dict[str, Any]) -> Holder | None:
    spec = lease.get("spec") or {}
    pod = spec.get("holderIdentity")
    if not isinstance(pod, str) or not pod:
        return None
    annotations = (lease.get("metadata") or {}).get("annotations") or {}
    return Holder(
        pod, str(annotations.get(NODE_ANNOTATION, "")), str(annotations.get(ATTACHMENT_ANNOTATION, ""))
    )


# --- Events ---------------------------------------------------------------------------------------


@dataclass
class _Series:
    """One (Pod, reason)'s Event: its name once created, what is counted but not yet written."""

    name: str = ""
    count: int = 0
    written_count: int = 0
    written_at: float = 0.0
    message: str = ""
    type: str = "Normal"
    first: str = ""
    last: str = ""
    flush: asyncio.TimerHandle | None = None
    writing: bool = False


@dataclass
class EventCounters:
    written: int = 0
    failed: int = 0


class EventRecorder:
    """Events on Pods, at most one API write per Pod and reason per `interval`; runs on the loop,
    writes in `executor`."""

    def __init__(self, client: ApiClient, node: str, interval: float, executor: Executor) -> None:
        self.client, self.node, self.interval, self.executor = client, node, interval, executor
        self.series: dict[tuple[str, str, str], _Series] = {}
        self.counters = EventCounters()
        self.on_api_error: Callable[[str], None] = lambda _operation: None

    def record(self, pod: PodRef, reason: str, message: str, warning: bool = False) -> None:
        key = (pod.namespace, pod.name, reason)
        series = self.series.setdefault(key, _Series())
        stamp = _micro_time(_now()).split(".")[0] + "Z"
        series.count += 1
        series.message, series.type, series.last = message, "Warning" if warning else "Normal", stamp
        series.first = series.first or stamp
        _log.info("event on pod %s/%s: %s: %s", pod.namespace, pod.name, reason, message)
        if series.flush is not None or series.writing:
            return  # a write is due already: it takes this one along
        # The first of a series at once; after a write (or a failed one: the API server may be
        # struggling) the next one `interval` later.
        wait = series.written_at + self.interval - time.monotonic() if series.written_at else 0.0
        loop = asyncio.get_running_loop()
        series.flush = loop.call_later(max(wait, 0.0), lambda: loop.create_task(self._write(pod, key)))

    async def _write(self, pod: PodRef, key: tuple[str, str, str]) -> None:
        series = self.series[key]
        series.flush, series.writing = None, True
        count, message, kind, first, last = (
            series.count,
            series.message,
            series.type,
            series.first,
            series.last,
        )
        name = series.name
        try:
            name = await asyncio.get_running_loop().run_in_executor(
                self.executor, lambda: self._send(pod, key[2], name, count, message, kind, first, last)
            )
            series.name, series.written_count = name, count
            self.counters.written += 1
        except KubernetesError as error:
            self.counters.failed += 1
            self.on_api_error("event")
            _log.warning("event %s on pod %s/%s not written: %s", key[2], pod.namespace, pod.name, error)
        finally:
            series.writing = False
            series.written_at = time.monotonic()
        if series.count > series.written_count:  # more came while writing, or the write failed
            loop = asyncio.get_running_loop()
            series.flush = loop.call_later(self.interval, lambda: loop.create_task(self._write(pod, key)))

    def _send(
        self, pod: PodRef, reason: str, name: str, count: int, message: str, kind: str, first: str, last: str
    ) -> str:
        if name:
            try:
                self.client.patch_event(
                    pod.namespace, name, {"count": count, "message": message, "lastTimestamp": last}
                )
                return name
            except KubernetesError as error:
                if error.status != 404:  # an Event expires (the API server's --event-ttl, 1 h)
                    raise
        name = f"{pod.name}.{secrets.token_hex(8)}"
        involved = {"apiVersion": "v1", "kind": "Pod", "namespace": pod.namespace, "name": pod.name}
        if pod.uid:
            involved["uid"] = pod.uid  # kubectl describe pod selects its Events by uid too
        self.client.create_event(
            pod.namespace,
            {
                "apiVersion": "v1",
                "kind": "Event",
                "metadata": {"name": name, "namespace": pod.namespace},
                "involvedObject": involved,
                "reason": reason,
                "message": message[:1024],
                "type": kind,
                "count": count,
                "firstTimestamp": first,
                "lastTimestamp": last,
                "source": {"component": COMPONENT, "host": self.node},
                "reportingComponent": COMPONENT,
                "reportingInstance": self.node,
            },
        )
        return name

    def forget(self, pod: PodRef) -> None:
        """The Pod's attachment is gone: drop its pending writes."""
        for key in [k for k in self.series if k[:2] == (pod.namespace, pod.name)]:
            series = self.series.pop(key)
            if series.flush is not None:
                series.flush.cancel()


# --- watching a Secret ----------------------------------------------------------------------------


@dataclass
class WatchCounters:
    reconnects: int = 0
    relists: int = 0


class SecretWatch:
    """Follows one Secret in a thread; `deliver(obj or None)` gets each state it sees (None: deleted),
    from that thread (the agent hands it to its loop)."""

    def __init__(
        self,
        client: ApiClient,
        ref: SecretRef,
        deliver: Callable[[dict[str, Any] | None], None],
        counters: WatchCounters,
        on_api_error: Callable[[str], None] = lambda _operation: None,
        version: str = "",
    ) -> None:
        self.client, self.ref, self.deliver, self.counters = client, ref, deliver, counters
        self.version = version  # where the watch starts ("": at the Secret as it is now)
        self.on_api_error = on_api_error
        self.stopped = threading.Event()
        self._watch: Watch | None = None
        self._lock = threading.Lock()
        self.thread = threading.Thread(
            target=self._run, name=f"pywg-watch-{ref[0]}/{ref[1]}"[:60], daemon=True
        )

    def start(self) -> SecretWatch:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stopped.set()
        with self._lock:
            if self._watch is not None:
                self._watch.close()

    def _run(self) -> None:
        namespace, name = self.ref
        version, relist, delay = self.version, False, WATCH_BACKOFF_MIN
        while not self.stopped.is_set():
            try:
                if relist:
                    self.counters.relists += 1
                    self.deliver(self._get())
                    relist = False
                watch = self.client.watch_secret(namespace, name, version)
                with self._lock:
                    if self.stopped.is_set():
                        watch.close()
                    self._watch = watch
                for kind, obj in watch:
                    version = str((obj.get("metadata") or {}).get("resourceVersion") or version)
                    delay = WATCH_BACKOFF_MIN
                    if kind in ("ADDED", "MODIFIED"):
                        self.deliver(obj)
                    elif kind == "DELETED":
                        self.deliver(None)
                if self.stopped.is_set():
                    return
                continue  # the server ended the watch (timeoutSeconds): resume where it got
            except KubernetesError as error:
                if self.stopped.is_set():
                    return
                if error.status == 410:
                    version, relist = "", True
                    continue
                self.counters.reconnects += 1
                self.on_api_error("watch")
                _log.warning("watch of secret %s/%s: %s; again in %.1f s", namespace, name, error, delay)
            except Exception:  # a bug must not end the watch for good
                _log.exception("watch of secret %s/%s failed", namespace, name)
            finally:
                with self._lock:
                    self._watch = None
            if self.stopped.wait(delay):
                return
            delay = min(delay * 2, WATCH_BACKOFF_MAX)

    def _get(self) -> dict[str, Any] | None:
        namespace, name = self.ref
        try:
            return self.client.get_secret(namespace, name, referenced_by="a Pod's attachment")
        except KubernetesError as error:
            if error.status == 404:
                return None
            raise


# --- handshakes ---------------------------------------------------------------------------------


@dataclass
class PeerHealth:
    """What the agent last saw of one peer, to tell when a handshake first worked, started failing
    and recovered."""

    last_handshake_ns: int = 0
    failures: int = 0
    failing_since: float | None = None
    reported_failing: bool = False


@dataclass
class HealthChange:
    reason: str
    message: str
    warning: bool = False


@dataclass
class AttachmentHealth:
    peers: dict[bytes, PeerHealth] = field(default_factory=dict)

    def observe(
        self,
        key: bytes,
        shown: str,
        endpoint: str,
        last_handshake_ns: int,
        failures: int,
        now: float,
        failing_after: float,
    ) -> HealthChange | None:
        """What changed for a peer since the last look: its first handshake, handshakes failing for
        `failing_after` seconds, or a handshake after that."""
        peer = self.peers.setdefault(key, PeerHealth())
        change = None
        if last_handshake_ns > peer.last_handshake_ns:
            if peer.reported_failing:
                change = HealthChange(
                    "TunnelRecovered", f"handshake with peer {shown} ({endpoint}) works again"
                )
            elif peer.last_handshake_ns == 0:
                change = HealthChange("TunnelUp", f"first handshake with peer {shown} ({endpoint})")
            peer.last_handshake_ns = last_handshake_ns
            peer.failing_since, peer.reported_failing = None, False
        elif failures > peer.failures and peer.failing_since is None:
            peer.failing_since = now
        peer.failures = failures
        if (
            peer.failing_since is not None
            and not peer.reported_failing
            and now - peer.failing_since >= failing_after
        ):
            peer.reported_failing = True
            change = HealthChange(
                "HandshakeFailing",
                f"no handshake with peer {shown} for {failing_after:g} s: is {endpoint} reachable and "
                "the peer's config right?",
                warning=True,
            )
        return change
