"""What the kubelet does to a container of a Pod before the runtime sees it, for the tests that run
deploy/daemonset.yaml's containers without a kubelet: the downward API (`env[].valueFrom.fieldRef`)
and `$(VAR)` references in `command`, `args` and env values, expanded as Kubernetes does.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

# The node the tests play: its name, and the address a host-network Pod has (loopback: what a test
# binds may only be reached from this machine).
NODE_NAME = "pywg-test-node"
HOST_IP = "127.0.0.1"

_REFERENCE = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def expand(text: str, env: Mapping[str, str]) -> str:
    """`$(NAME)` replaced by its value when NAME is defined (left as it is otherwise), `$$` by `$`."""

    def one(match: re.Match[str]) -> str:
        name = match.group(1)
        if name is None:
            return "$"
        return env.get(name, match.group(0))

    return _REFERENCE.sub(one, text)


def container_env(metadata: Mapping[str, Any], container: Mapping[str, Any]) -> dict[str, str]:
    """The container's environment: literal values (expanded) and the downward API's fields of a
    host-network Pod `metadata` names, on NODE_NAME."""
    fields = {
        "metadata.name": str(metadata.get("name", "")),
        "metadata.namespace": str(metadata.get("namespace", "")),
        "spec.nodeName": NODE_NAME,
        "status.hostIP": HOST_IP,
        "status.podIP": HOST_IP,
    }
    env: dict[str, str] = {}
    for entry in container.get("env", []):
        if "value" in entry:
            env[entry["name"]] = expand(str(entry["value"]), env)
            continue
        path = ((entry.get("valueFrom") or {}).get("fieldRef") or {}).get("fieldPath")
        assert path in fields, f"env {entry['name']}: {entry.get('valueFrom')} is not a field the tests give"
        env[entry["name"]] = fields[path]
    return env


def expanded(words: Sequence[str], env: Mapping[str, str]) -> list[str]:
    return [expand(str(word), env) for word in words]
