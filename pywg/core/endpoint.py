"""Endpoints are (IP address text, UDP port) tuples, as sockets give them.

A configuration's endpoint, which may name a host, is another type: pywg.config's `EndpointSpec`,
which the runtime resolves into one of these (pywg/runtime/resolve.py).
"""

from __future__ import annotations

from ipaddress import ip_address

Endpoint = tuple[str, int]


def packed_ip(endpoint: Endpoint) -> bytes:
    return ip_address(endpoint[0]).packed


def cookie_source(endpoint: Endpoint) -> bytes:
    """What the cookie MAC covers: address bytes then the port, big-endian."""
    return packed_ip(endpoint) + endpoint[1].to_bytes(2, "big")


def format_endpoint(endpoint: Endpoint) -> str:
    host, port = endpoint
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
