"""wireguard-cni's config.json: what users of the CNI plugin keep in a Kubernetes Secret.

``{"address": ..., "privateKey": ..., "peers": [{"endpoint", "publicKey", "allowedIPs",
"persistentKeepalive": "25s"}]}``, extended with a list of addresses, ``listenPort``, ``mtu``,
``fwmark`` and ``peers[].presharedKey``. Keys match case-insensitively and a repeated key's last
value wins, as with Go's encoding/json. An unknown key is an error naming the nearest known one: a
misspelt ``allowedIP`` must not leave a peer without allowed IPs. Errors start with a JSON path
(``peers[0].allowedIPs[1]: ...``).
"""

from __future__ import annotations

import json
from typing import Any

from pywg.config.fields import (
    add_allowed_ip,
    append_address,
    check_across_fields,
    check_address_given,
    parse_address,
    parse_endpoint,
    parse_fwmark,
    parse_keepalive,
    parse_key,
    parse_listen_port,
    parse_mtu,
    show_name,
    unknown_key,
)
from pywg.config.model import Address, ConfigError, InterfaceConfig, PeerConfig


class _JsonObject:
    """A JSON object as its key/value pairs in order, so repeated keys are seen."""

    __slots__ = ("pairs",)

    def __init__(self, pairs: list[tuple[str, Any]]) -> None:
        self.pairs = pairs


_JSON_TOP = ("address", "privateKey", "listenPort", "mtu", "fwmark", "peers")
_JSON_PEER = ("endpoint", "publicKey", "presharedKey", "allowedIPs", "persistentKeepalive")


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _wrong_type(where: str, expected: str, value: object) -> ConfigError:
    return ConfigError(f"{where}: expected {expected}, got {_json_type(value)}")


def _json_fields(
    obj: _JsonObject, prefix: str, known: tuple[str, ...], warnings: list[str]
) -> dict[str, Any]:
    """Known keys matched case-insensitively (as Go does); the last of repeated keys wins.

    null counts as absent (Go leaves the field alone). An unknown key is an error.
    """
    canonical = {name.casefold(): name for name in known}
    fields: dict[str, Any] = {}
    seen: set[str] = set()
    for key, value in obj.pairs:
        name = canonical.get(key.casefold())
        if name is None:
            if known is _JSON_PEER:
                problem = unknown_key(key, known, _JSON_TOP, "it belongs at the top level")
            else:
                problem = unknown_key(key, known, _JSON_PEER, "it belongs in each entry of peers")
            raise ConfigError(f"{prefix}{show_name(key)}: {problem}")
        if name in seen:
            warnings.append(f"{prefix}{name}: given more than once; the last one is used")
        seen.add(name)
        if value is not None:
            fields[name] = value
    return fields


def _json_str(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise _wrong_type(where, "a string", value)
    return value


def _json_list(value: object, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise _wrong_type(where, "an array", value)
    return value


def _json_uint_or_str(value: object, where: str) -> int | str:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise _wrong_type(where, "an integer", value)
    return value


def parse_json(text: str, require_address: bool) -> InterfaceConfig:
    try:
        doc = json.loads(text, object_pairs_hook=_JsonObject)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    except RecursionError:
        raise ConfigError("invalid JSON: nested too deeply") from None
    except ValueError:  # e.g. a number with more digits than int() accepts
        raise ConfigError("invalid JSON: a number is too long") from None
    if not isinstance(doc, _JsonObject):
        raise _wrong_type("top level", "an object", doc)

    warnings: list[str] = []
    top = _json_fields(doc, "", _JSON_TOP, warnings)
    if "privateKey" not in top:
        raise ConfigError("privateKey: required")
    private_key = parse_key(_json_str(top["privateKey"], "privateKey"), "privateKey")

    addresses: list[Address] = []
    raw_address = top.get("address", [])
    if isinstance(raw_address, str):
        addresses.append(parse_address(raw_address, "address"))
    elif isinstance(raw_address, list):
        for j, item in enumerate(raw_address):
            where = f"address[{j}]"
            append_address(addresses, parse_address(_json_str(item, where), where), where)
    else:
        raise _wrong_type("address", "a string or an array of strings", raw_address)
    check_address_given(addresses, "address", '"address": "10.0.0.2/32"', require_address, warnings)

    cfg = InterfaceConfig(private_key=private_key, addresses=addresses, warnings=warnings)
    if "listenPort" in top:
        cfg.listen_port = parse_listen_port(_json_uint_or_str(top["listenPort"], "listenPort"), "listenPort")
    if "mtu" in top:
        cfg.mtu = parse_mtu(_json_uint_or_str(top["mtu"], "mtu"), "mtu")
    if "fwmark" in top:
        cfg.fwmark = parse_fwmark(_json_uint_or_str(top["fwmark"], "fwmark"), "fwmark")

    for i, raw_peer in enumerate(_json_list(top.get("peers", []), "peers")):
        cfg.peers.append(_parse_json_peer(raw_peer, f"peers[{i}]", warnings))

    def peer_where(i: int, name: str) -> str:
        return f"peers[{i}].{name}" if name else f"peers[{i}]"

    return check_across_fields(cfg, "mtu", peer_where)


def _parse_json_peer(raw: object, prefix: str, warnings: list[str]) -> PeerConfig:
    if not isinstance(raw, _JsonObject):
        raise _wrong_type(prefix, "an object", raw)
    fields = _json_fields(raw, prefix + ".", _JSON_PEER, warnings)
    if "publicKey" not in fields:
        raise ConfigError(f"{prefix}.publicKey: required")
    where = f"{prefix}.publicKey"
    peer = PeerConfig(public_key=parse_key(_json_str(fields["publicKey"], where), where))
    if "presharedKey" in fields:
        where = f"{prefix}.presharedKey"
        psk = _json_str(fields["presharedKey"], where)
        peer.preshared_key = parse_key(psk, where) if psk.strip() else None
    if "endpoint" in fields:
        where = f"{prefix}.endpoint"
        endpoint = _json_str(fields["endpoint"], where)
        peer.endpoint = parse_endpoint(endpoint, where) if endpoint.strip() else None
    for j, item in enumerate(_json_list(fields.get("allowedIPs", []), f"{prefix}.allowedIPs")):
        where = f"{prefix}.allowedIPs[{j}]"
        add_allowed_ip(peer, _json_str(item, where), where, warnings)
    if "persistentKeepalive" in fields:
        where = f"{prefix}.persistentKeepalive"
        value = fields["persistentKeepalive"]
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise _wrong_type(where, 'seconds or a duration string like "25s"', value)
        peer.persistent_keepalive = parse_keepalive(value, where)
    return peer
