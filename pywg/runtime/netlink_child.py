"""The netconfig calls of `pywg up`, each made in a child process forked for it.

pyroute2, which pywg/runtime/netconfig.py uses, costs a process about 20 MB of memory once imported
(it loads some 380 modules). A `pywg up` daemon needs netlink only to set its interface up, on SIGHUP
and on `pywg down` after a crash, never per packet, so it forks a child for each of those calls and
never imports pyroute2 itself: the child imports netconfig, makes the call, reports the result
(a bool or an int) or the OSError (errno and message) through a pipe, and exits. Arguments need no
encoding: the child has the parent's memory. A call costs a fork and pyroute2's import, ~0.1 s.

The node agent (cni/agent.py) hosts many tunnels and calls netconfig directly.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from ipaddress import IPv4Interface, IPv4Network, IPv6Interface, IPv6Network
from typing import Any

from pywg.runtime.oserror import DescribedOSError

IPNetwork = IPv4Network | IPv6Network
IPInterface = IPv4Interface | IPv6Interface


def link_exists(netns: str | None, ifname: str) -> bool:
    return bool(_in_child("link_exists", netns, ifname))


def configure_interface(
    netns: str | None, ifname: str, mtu: int, addresses: Iterable[IPInterface], routes: Iterable[IPNetwork]
) -> None:
    _in_child("configure_interface", netns, ifname, mtu, list(addresses), list(routes))


def remove_routes(netns: str | None, ifname: str, routes: Iterable[IPNetwork]) -> int:
    return int(_in_child("remove_routes", netns, ifname, list(routes)))


def remove_addresses(netns: str | None, ifname: str, addresses: Iterable[IPInterface]) -> int:
    return int(_in_child("remove_addresses", netns, ifname, list(addresses)))


def delete_link(netns: str | None, ifname: str) -> bool:
    return bool(_in_child("delete_link", netns, ifname))


def _in_child(name: str, *args: Any) -> Any:
    """netconfig.`name`(*args) in a forked child; its bool/int result, or its OSError raised here."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        _child(name, args, write)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        reply = pipe.read()
    os.waitpid(pid, 0)
    if not reply:
        raise DescribedOSError(f"netconfig {name}: the child process making the call died")
    answer = json.loads(reply)
    if "errno" in answer:
        if answer["errno"]:
            raise DescribedOSError(answer["errno"], answer["message"])
        raise DescribedOSError(answer["message"])
    if "bug" in answer:
        raise RuntimeError(f"netconfig {name}: {answer['bug']}")
    return answer["result"]


def _child(name: str, args: tuple[Any, ...], write: int) -> None:
    """In the child: make the call, write the answer, exit without running the parent's cleanups."""
    try:
        from pywg.runtime import netconfig

        result = getattr(netconfig, name)(*args)
        answer: dict[str, Any] = {"result": result if isinstance(result, bool | int) else None}
    except OSError as error:
        answer = {"errno": error.errno, "message": error.strerror if error.errno else str(error)}
    except BaseException as error:  # a bug: the parent raises it as a RuntimeError
        answer = {"bug": f"{type(error).__name__}: {error}"}
    try:
        os.write(write, json.dumps(answer).encode())
    finally:
        os._exit(0)
