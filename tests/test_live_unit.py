"""cni/live.py's parts that a real API server cannot be made to exercise on demand: a watch that is
told 410 Gone (etcd compacted its resourceVersion away) or breaks, and the handshake bookkeeping
behind the TunnelUp / HandshakeFailing / TunnelRecovered Events. The API client is a stub here."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from cni import live
from cni.k8s import KubernetesError
from cni.live import AttachmentHealth, SecretWatch, WatchCounters
from cni.spec import TRY_AGAIN_LATER


def _secret(version: str, text: str) -> dict[str, Any]:
    return {"metadata": {"name": "wg", "resourceVersion": version}, "stringData": {"config.json": text}}


class _Watch:
    def __init__(self, events: list[Any]) -> None:
        self.events = events

    def __iter__(self) -> Iterator[tuple[str, dict[str, Any]]]:
        for item in self.events:
            if isinstance(item, Exception):
                raise item
            yield item

    def close(self) -> None:
        pass


class _Client:
    """Answers watch_secret with each scripted watch in turn, get_secret with each scripted state."""

    def __init__(self, watches: list[list[Any]], gets: list[dict[str, Any] | None]) -> None:
        self.watches, self.gets = watches, gets
        self.versions: list[str] = []

    def watch_secret(self, namespace: str, name: str, resource_version: str = "") -> _Watch:
        self.versions.append(resource_version)
        if not self.watches:
            raise AssertionError("watched more often than scripted")
        events = self.watches.pop(0)
        if isinstance(events, Exception):
            raise events
        return _Watch(events)

    def get_secret(self, namespace: str, name: str, **_: Any) -> dict[str, Any]:
        found = self.gets.pop(0)
        if found is None:
            raise KubernetesError(7, "not found", 404, "NotFound")
        return found


def test_a_watch_resumes_relists_after_410_and_reconnects(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(live, "WATCH_BACKOFF_MIN", 0.0)
    broken = KubernetesError(TRY_AGAIN_LATER, "the watch broke")
    gone = KubernetesError(TRY_AGAIN_LATER, "too old resource version", 410, "Expired")
    client = _Client(
        watches=[
            [("ADDED", _secret("5", "one"))],  # then the server ends the watch: resumed from 5
            [("BOOKMARK", {"metadata": {"resourceVersion": "7"}}), gone],  # 410: read it again
            [("ADDED", _secret("9", "two")), broken],  # broken: watched again from 9
            [("DELETED", _secret("11", "two"))],
        ],
        gets=[None],  # deleted while the watch was gone: seen by the GET
    )
    seen: list[str | None] = []
    done = threading.Event()
    counters = WatchCounters()

    def deliver(obj: dict[str, Any] | None) -> None:
        seen.append(None if obj is None else obj["stringData"]["config.json"])
        if len(seen) == 4:
            watch.stop()
            done.set()

    watch = SecretWatch(client, ("ns", "wg"), deliver, counters)  # type: ignore[arg-type]
    watch.start()  # after the assignment: deliver() uses `watch`
    watch.thread.join(10)
    assert done.is_set() and not watch.thread.is_alive()
    assert seen == ["one", None, "two", None]
    assert client.versions == ["", "5", "", "9"]
    assert (counters.relists, counters.reconnects) == (1, 1)


def test_a_watch_starts_where_the_add_read_the_secret() -> None:
    """A delete between the ADD's read and the watch's start is still seen: the watch starts at the
    resourceVersion the ADD read, not at the Secret as it is when the watch begins (then gone)."""
    client = _Client(watches=[[("DELETED", _secret("8", "one"))]], gets=[])
    seen: list[str | None] = []

    def deliver(obj: dict[str, Any] | None) -> None:
        seen.append(None if obj is None else obj["stringData"]["config.json"])
        watch.stop()

    watch = SecretWatch(client, ("ns", "wg"), deliver, WatchCounters(), version="7")  # type: ignore[arg-type]
    watch.start()
    watch.thread.join(10)
    assert seen == [None] and client.versions == ["7"]


def test_handshake_health_up_failing_recovered() -> None:
    health = AttachmentHealth()
    key, shown, where = b"k" * 32, "KEY", "192.0.2.1:51820"

    def look(handshake_ns: int, failures: int, now: float) -> str | None:
        change = health.observe(key, shown, where, handshake_ns, failures, now, 120.0)
        return change.reason if change else None

    assert look(0, 0, 0.0) is None  # nothing tried yet
    assert look(0, 1, 5.0) is None  # failing since 5 s
    assert look(0, 20, 124.0) is None
    assert look(0, 21, 125.0) == "HandshakeFailing"
    assert look(0, 22, 130.0) is None  # said once
    assert look(10**18, 22, 131.0) == "TunnelRecovered"
    assert look(10**18, 22, 500.0) is None
    assert look(2 * 10**18, 22, 501.0) is None  # a rekey is no news

    fresh = AttachmentHealth()
    change = fresh.observe(key, shown, where, 10**18, 0, 1.0, 120.0)
    assert change is not None and change.reason == "TunnelUp" and not change.warning
    assert change.message == f"first handshake with peer {shown} ({where})"
