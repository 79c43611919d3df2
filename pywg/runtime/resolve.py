"""Peer endpoints to socket addresses: numeric ones at once, host names through getaddrinfo.

`resolve_endpoints` is for one tunnel (`pywg up`): one name after the other. The node agent serves
many tenants, whose host names may point at a DNS server that never answers: `resolve_concurrently`
looks each distinct name up once, a few at a time on the caller's executor, and gives up on all of
them at one deadline, so a config's names cost it at most that long and never hold anything else.
"""

from __future__ import annotations

import asyncio
import socket
from concurrent.futures import Executor
from ipaddress import ip_address

from pywg.config import ConfigError, InterfaceConfig
from pywg.core import Endpoint


class ResolveTimeout(ConfigError):
    """Some host names were not resolved before the deadline (their DNS may answer later)."""


def numeric(host: str, port: int) -> Endpoint | None:
    """The endpoint of an address literal, without a lookup; None for a host name."""
    try:
        return (str(ip_address(host)), port)
    except ValueError:
        return None


def lookup(host: str, port: int, where: str) -> Endpoint:
    """The first answer of getaddrinfo, as wg takes it; ConfigError naming `where` if none."""
    try:
        answers = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    except OSError as error:
        raise ConfigError(f"{where}: cannot resolve {host!r}: {error.strerror or error}") from None
    address = answers[0][4]
    return (str(address[0]), int(address[1]))


def resolve_endpoints(cfg: InterfaceConfig) -> list[Endpoint | None]:
    """Every peer's endpoint (None where it has none), one lookup after the other."""
    resolved: list[Endpoint | None] = []
    for index, peer in enumerate(cfg.peers):
        endpoint = peer.endpoint
        if endpoint is None:
            resolved.append(None)
        else:
            found = numeric(endpoint.host, endpoint.port)
            resolved.append(found or lookup(endpoint.host, endpoint.port, f"peers[{index}].endpoint"))
    return resolved


def host_names(cfg: InterfaceConfig) -> dict[tuple[str, int], str]:
    """The (host, port) of every endpoint that needs a lookup, each with where it is first named."""
    names: dict[tuple[str, int], str] = {}
    for index, peer in enumerate(cfg.peers):
        endpoint = peer.endpoint
        if endpoint is not None and numeric(endpoint.host, endpoint.port) is None:
            names.setdefault((endpoint.host, endpoint.port), f"peers[{index}].endpoint")
    return names


async def resolve_concurrently(
    cfg: InterfaceConfig, executor: Executor, timeout: float, parallel: int = 4
) -> list[Endpoint | None]:
    """As `resolve_endpoints`, each distinct (name, port) once, at most `parallel` lookups at a time
    on `executor`, all within `timeout` seconds (ResolveTimeout naming what was left)."""
    names = host_names(cfg)
    found: dict[tuple[str, int], Endpoint] = {}
    if names:
        loop = asyncio.get_running_loop()
        slots = asyncio.Semaphore(parallel)

        async def one(host: str, port: int, where: str) -> None:
            async with slots:
                found[(host, port)] = await loop.run_in_executor(executor, lookup, host, port, where)

        tasks = [asyncio.ensure_future(one(host, port, where)) for (host, port), where in names.items()]
        try:
            await asyncio.wait_for(asyncio.gather(*tasks), timeout)
        except TimeoutError:
            left = [f"{where} {host!r}" for (host, port), where in names.items() if (host, port) not in found]
            shown = ", ".join(left[:3]) + (f" and {len(left) - 3} more" if len(left) > 3 else "")
            raise ResolveTimeout(f"{shown}: no DNS answer within {timeout:g} s") from None
        finally:
            for task in tasks:
                task.cancel()
    resolved: list[Endpoint | None] = []
    for peer in cfg.peers:
        endpoint = peer.endpoint
        if endpoint is None:
            resolved.append(None)
        else:
            resolved.append(numeric(endpoint.host, endpoint.port) or found[(endpoint.host, endpoint.port)])
    return resolved
