"""A node agent's attachments (a Pod's interface, by container ID and interface name) and the state
file each one has.

One 0600 file per attachment, `<state-dir>/<name>.json`, in a 0700 directory: it holds the private
key. It is written (marked incomplete) before anything is created and completed before an add
replies ok; del removes it. The next agent re-attaches what the files list (cni/agent.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from ipaddress import IPv4Network, IPv6Network
from pathlib import Path
from typing import Any

from cni.spec import IO_FAILURE
from pywg.config import ConfigError, InterfaceConfig, parse_config
from pywg.core import Endpoint
from pywg.runtime.tunnel import Tunnel

STATE_VERSION = 1
KERNEL, USERSPACE = "kernel", "userspace"

_log = logging.getLogger("pywg-cni-agent")
Network = IPv4Network | IPv6Network
Key = tuple[str, str]


class OpError(Exception):
    """An operation failed; `code` is a CNI error code, the message one line for the user."""

    def __init__(self, code: int, msg: str) -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg


def attachment_name(container_id: str, ifname: str) -> str:
    """The UAPI name: "cni" + 12 hex digits of sha256("<container_id>/<ifname>"), 15 characters."""
    return "cni" + hashlib.sha256(f"{container_id}/{ifname}".encode()).hexdigest()[:12]


# --- attachments and their state files ---------------------------------------------------------


@dataclass
class Attachment:
    container_id: str
    ifname: str
    netns: str
    netns_id: tuple[int, int]
    pod: str
    cfg: InterfaceConfig
    endpoints: list[Endpoint | None]
    text: str = ""  # the config as it came (a Secret's JSON or INI): kept in the state file
    network: str = ""  # the network config's name: GC and DEL of another network leave it alone
    secret: tuple[str, str] | None = None  # (namespace, name) of the Secret its config is from: watched
    pod_uid: str = ""  # for Events on the Pod
    mode: str = USERSPACE
    link: str = ""  # kernel mode: the link's name in the agent's namespace until it moves to the Pod
    listen_port: int | None = None
    complete: bool = False
    routes: list[Network] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # IPv6 routes left out: IPv6 is off in the Pod
    shadowed: list[str] = field(default_factory=list)  # routes added with SHADOWED_METRIC
    tunnel: Tunnel | None = None
    task: asyncio.Task[str] | None = None
    stopping: bool = False
    dead_reason: str | None = None
    secret_deleted: bool = False  # its Secret is gone: the tunnel keeps the last config

    @property
    def key(self) -> Key:
        return (self.container_id, self.ifname)

    @property
    def name(self) -> str:
        return attachment_name(self.container_id, self.ifname)

    @property
    def running(self) -> bool:
        if self.mode == KERNEL:
            return self.complete  # the kernel forwards by itself; check inspects the link
        return self.tunnel is not None and self.task is not None and not self.task.done()

    def state(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "container_id": self.container_id,
            "ifname": self.ifname,
            "netns": self.netns,
            "netns_id": list(self.netns_id),
            "pod": self.pod,
            "network": self.network,
            "secret": list(self.secret) if self.secret else None,
            "pod_uid": self.pod_uid,
            "complete": self.complete,
            "mode": self.mode,
            "link": self.link,
            "listen_port": self.listen_port,
            "endpoints": [list(e) if e is not None else None for e in self.endpoints],
            "config": self.text,
        }

    @classmethod
    def from_state(cls, doc: dict[str, Any]) -> Attachment:
        cid, ifname = str(doc["container_id"]), str(doc["ifname"])
        text = str(doc["config"])
        cfg = parse_config(text, source=f"state of {attachment_name(cid, ifname)}")
        endpoints: list[Endpoint | None] = [
            (str(e[0]), int(e[1])) if e is not None else None for e in doc.get("endpoints") or []
        ]
        if len(endpoints) != len(cfg.peers):
            endpoints = [None] * len(cfg.peers)
        dev, ino = doc["netns_id"]
        port = doc.get("listen_port")
        secret = doc.get("secret")
        return cls(
            container_id=cid,
            ifname=ifname,
            netns=str(doc["netns"]),
            netns_id=(int(dev), int(ino)),
            pod=str(doc.get("pod") or ""),
            cfg=cfg,
            endpoints=endpoints,
            text=text,
            network=str(doc.get("network") or ""),
            secret=(str(secret[0]), str(secret[1]))
            if isinstance(secret, list) and len(secret) == 2
            else None,
            pod_uid=str(doc.get("pod_uid") or ""),
            mode=KERNEL if doc.get("mode") == KERNEL else USERSPACE,
            link=str(doc.get("link") or ""),
            listen_port=int(port) if port else None,
            complete=bool(doc.get("complete")),
        )


class StateStore:
    """`<dir>/<name>.json`, 0600, written through a temporary file and a rename."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory

    def path(self, name: str) -> Path:
        return self.dir / f"{name}.json"

    def save(self, att: Attachment) -> None:
        # A full or read-only state dir is the node's fault, not a bug: CNI code 5 naming the file
        # and the reason, instead of "internal error" and a traceback.
        try:
            self._write(att)
        except OSError as error:
            raise OpError(
                IO_FAILURE, f"cannot write the state file {self.path(att.name)}: {error.strerror or error}"
            ) from None

    def _write(self, att: Attachment) -> None:
        final = self.path(att.name)
        temporary = self.dir / f".{att.name}.tmp"
        temporary.unlink(missing_ok=True)
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            with os.fdopen(fd, "w") as handle:
                handle.write(json.dumps(att.state()))  # json.dump's encoder is the pure-Python one
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, final)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise

    def remove(self, name: str) -> None:
        for path in (self.path(name), self.dir / f".{name}.tmp"):
            try:
                path.unlink(missing_ok=True)
            except OSError as error:  # EROFS even when there is nothing to remove
                if os.path.lexists(path):  # as in save: code 5, and the DEL can be retried
                    raise OpError(
                        IO_FAILURE, f"cannot remove the state file {path}: {error.strerror or error}"
                    ) from None

    def load(self) -> list[Attachment]:
        found = []
        for path in sorted(self.dir.glob("cni*.json")):
            try:
                att = Attachment.from_state(json.loads(path.read_text()))
                if path.name != f"{att.name}.json":
                    raise ValueError("its name does not match its container id and interface")
            except (OSError, ValueError, KeyError, TypeError, ConfigError) as error:
                _log.error("removing unreadable state file %s: %s", path.name, type(error).__name__)
                with contextlib.suppress(OSError):  # a read-only state dir: the agent must start still
                    path.unlink(missing_ok=True)
                continue
            found.append(att)
        for stale in self.dir.glob(".cni*.tmp"):
            with contextlib.suppress(OSError):
                stale.unlink(missing_ok=True)
        return found
