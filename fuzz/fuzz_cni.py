#!/usr/bin/env python3
"""Fuzz target: a CNI invocation as pywg-cni parses it: the CNI_* environment, CNI_ARGS, stdin.

An input is ``NAME=value`` lines (the environment: CNI_COMMAND, CNI_CONTAINERID, CNI_NETNS,
CNI_IFNAME, CNI_ARGS, CNI_PATH), an empty line, then the network configuration as the runtime
writes it to stdin. It goes through what cni/plugin.py `run` does before anything touches the
node: `parse_request`, `NetConf` (mode, paths, an inline `wireguard` object, `prevResult` of any
version), the inline config through `wireguard_config`, and the result rendered in every
version. The agent, the Kubernetes API and staticConfigPath's file are not reached: inputs
that would need them stop before.

Only `CniError` may come out. Its JSON must serialise, and neither it nor the result may quote
the inline config's private or preshared key (unless the input holds the same text elsewhere).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import atheris

with atheris.instrument_imports(include=["cni", "pywg", "_common"]):
    from _common import fuzz

    from cni.plugin import NetConf, build_result, wireguard_config
    from cni.policy import NodePolicy
    from cni.spec import SUPPORTED_VERSIONS, CniError, Request, parse_request, version_answer

SECRET_FIELDS = ("privatekey", "presharedkey")


def parse_env(header: bytes) -> dict[str, str]:
    env: dict[str, str] = {}
    for line in header.decode("utf-8", "surrogateescape").split("\n"):
        name, _, value = line.partition("=")
        env[name] = value
    return env


def secrets_in(value: Any) -> list[str]:
    """The private and preshared key texts anywhere in the inline config."""
    if isinstance(value, list):
        return [text for item in value for text in secrets_in(item)]
    if not isinstance(value, dict):
        return []
    found = [v.strip() for k, v in value.items() if k.lower() in SECRET_FIELDS and isinstance(v, str)]
    return [text for text in found if len(text) >= 16] + secrets_in(list(value.values()))


def render(request: Request, conf: NetConf) -> str:
    """What ADD prints for this request (MTU 1420), in every version; "" when ADD goes further."""
    if conf.inline is None:
        return (
            json.dumps([conf.prev_result.render(v) for v in SUPPORTED_VERSIONS]) if conf.prev_result else ""
        )
    found = wireguard_config(request, conf, NodePolicy())
    assert found is not None
    cfg = found.cfg
    result = build_result(request, conf, cfg, cfg.mtu or 1420)
    return json.dumps([result.render(version) for version in SUPPORTED_VERSIONS])


def run(env: dict[str, str], stdin: bytes) -> tuple[str, dict[str, Any]]:
    """(what would be printed, the network configuration as parsed, {} if it was not)."""
    config: dict[str, Any] = {}
    try:
        request = parse_request(env, stdin)
        config = request.config
        if request.command == "VERSION":
            return json.dumps(version_answer(request.cni_version)), config
        return render(request, NetConf(config)), config
    except CniError as error:
        assert isinstance(error.code, int) and isinstance(error.msg, str)
        return json.dumps(error.to_json("1.1.0")), config


def strings(value: Any) -> Iterator[str]:
    """Every string in a JSON document, keys included; the values of key fields left out."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for item in value:
            yield from strings(item)
    elif isinstance(value, dict):
        for name, item in value.items():
            yield name
            if name.lower() not in SECRET_FIELDS:
                yield from strings(item)


def test_one_input(data: bytes) -> None:
    header, _, stdin = data.partition(b"\n\n")
    env = parse_env(header)
    output, config = run(env, stdin)
    # A key's text that the input holds elsewhere too (CNI_NETNS, a prevResult route) may show.
    elsewhere = [*env, *env.values(), *strings(config)]
    secrets = [key for key in secrets_in(config.get("wireguard")) if not any(key in t for t in elsewhere)]
    for text in strings(json.loads(output)) if secrets else ():
        assert not any(secret in text for secret in secrets), "a key of the inline config in the output"


if __name__ == "__main__":
    fuzz(test_one_input)
