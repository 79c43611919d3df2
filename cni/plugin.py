"""pywg-cni: the CNI plugin (also installed under the type name `wg-cni`).

ADD finds the Pod's WireGuard config (its Secret, named by the annotation
`wgcni.schu.io/configsecret`, or a static file, or an inline object in the
network config), then creates CNI_IFNAME in the Pod's namespace: a kernel
WireGuard link when the node has the module, otherwise a TUN driven by the
pywg node agent. Errors are CNI error JSON on stdout, never a traceback.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, ExitStack
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from cni import agent_client, k8s, kubeconfig
from cni.policy import SOCKET_ENV, NodePolicy, PolicyError, configured_config_dirs, configured_socket
from cni.spec import (
    DECODING_FAILURE,
    INTERNAL,
    INVALID_NETWORK_CONFIG,
    NOT_AVAILABLE,
    TRY_AGAIN_LATER,
    UNSUPPORTED_FIELD,
    CniError,
    Interface,
    IPConfig,
    Request,
    Result,
    Route,
    parse_request,
    parse_result,
    version_answer,
)
from pywg.config import ConfigError, InterfaceConfig, parse_config
from pywg.runtime.system import disable_core_dumps

ANNOTATION = "wgcni.schu.io/configsecret"
MODES = ("auto", "kernel", "userspace")
TUN_DEVICE = Path("/dev/net/tun")
# A TUN (and a kernel WireGuard link) has no hardware address, so the result has no `mac` for it: Multus
# copies what it gets into the network-status annotation. podman's CNI backend is the exception: it
# parses a MAC for every sandbox interface (containers/common libnetwork/cni CNIResultToStatus,
# net.ParseMAC) and fails the container on an empty one ("invalid MAC address"). It is the runtime that
# passes K8S_POD_NAME without K8S_POD_NAMESPACE, so a call without K8S_POD_NAMESPACE gets all zeros,
# the "no address" of loopback.
PODMAN_MAC = "00:00:00:00:00:00"
_log = logging.getLogger("pywg-cni")


class AgentLink(Protocol):
    """How the plugin reaches the node agent: through the operator's socket (cni/agent_client.py
    SocketLink), or directly when the plugin runs inside the agent (cni/agent.py InProcessLink)."""

    socket_path: Path

    def call(
        self, op: str, payload: dict[str, Any], start: bool = True, parsed: InterfaceConfig | None = None
    ) -> dict[str, Any]:
        """`parsed`: the add's config as the plugin parsed it, which an agent in this process takes
        instead of parsing the text again (a hub's thousands of peers cost a fifth of a second)."""
        ...

    def config_turn(self, size: int) -> AbstractContextManager[None]:
        """Held from parsing an add's config of `size` bytes until the agent has set it up: in the
        agent's process, a large config waits for its turn (cni/pacing.py); elsewhere, nothing."""
        ...


class NetConf:
    """The plugin's own keys in the network configuration."""

    def __init__(self, raw: Mapping[str, Any]) -> None:
        self.raw = raw
        self.name = self._string("name", "")
        self.mode = self._string("mode", "auto")
        if self.mode not in MODES:
            raise CniError(UNSUPPORTED_FIELD, f'mode: "{self.mode}" is not one of {", ".join(MODES)}')
        self.kubeconfig = self._string("kubeConfigPath", "")
        self.static_config = self._string("staticConfigPath", "")
        self.agent_socket = self._string("agentSocket", "")
        inline = raw.get("wireguard")
        if inline is not None and not isinstance(inline, dict):
            raise CniError(INVALID_NETWORK_CONFIG, "wireguard: must be an object in the config.json format")
        self.inline: dict[str, Any] | None = inline
        self.prev_result = parse_result(raw["prevResult"]) if raw.get("prevResult") else None

    def _string(self, key: str, default: str) -> str:
        value = self.raw.get(key, default)
        if not isinstance(value, str):
            raise CniError(INVALID_NETWORK_CONFIG, f"{key}: must be a string")
        return value

    def check_agent_socket(self, link: AgentLink) -> None:
        """A network config cannot send the plugin to another socket than the operator's (a tenant's
        NetworkAttachmentDefinition could otherwise point it at one that forges results); naming
        the operator's own socket, as older configs did, is harmless."""
        if self.agent_socket and Path(self.agent_socket) != link.socket_path:
            raise CniError(
                INVALID_NETWORK_CONFIG,
                f"agentSocket: a network config cannot choose the node agent's socket "
                f"({self.agent_socket[:200]!r} is not {link.socket_path}); remove it: the node's operator "
                f"sets it ({SOCKET_ENV})",
            )


class PodConfig(NamedTuple):
    """A Pod's WireGuard config: parsed, as its text came (what the agent gets), and where from; for
    a Secret, which one (the node agent watches it) and the Pod's uid (for Events on it)."""

    cfg: InterfaceConfig
    text: str
    source: str
    secret: tuple[str, str] | None = None
    pod_uid: str = ""
    secret_version: str = ""  # the resourceVersion read: the agent's watch starts there


def wireguard_config(
    request: Request,
    conf: NetConf,
    node_policy: NodePolicy,
    before_parse: Callable[[int], object] = lambda size: None,
) -> PodConfig | None:
    """The Pod's WireGuard config, or None for a chained plugin whose Pod has no annotation;
    `before_parse(size)` is called with the size of its text, before it is parsed."""
    if conf.inline is not None:
        text = json.dumps(conf.inline)
        before_parse(len(text))
        return _parse(text, "the network config's wireguard object")
    if conf.static_config:
        path = _allowed(node_policy, "staticConfigPath", conf.static_config)
        try:
            text = path.read_text()
        except OSError as error:
            raise CniError(
                INVALID_NETWORK_CONFIG, f"staticConfigPath {conf.static_config}: {error.strerror}"
            ) from None
        before_parse(len(text))
        return _parse(text, conf.static_config)
    namespace, name = request.args.get("K8S_POD_NAMESPACE", ""), request.args.get("K8S_POD_NAME", "")
    if not namespace or not name:
        raise CniError(
            INVALID_NETWORK_CONFIG,
            "no WireGuard config: CNI_ARGS lacks K8S_POD_NAMESPACE/K8S_POD_NAME and the network config has "
            "neither staticConfigPath nor a wireguard object",
        )
    try:
        client = _api_client(conf.kubeconfig, node_policy)
        pod = client.get_pod(namespace, name)
        secret_name = _secret_name(pod, f"{namespace}/{name}")
        if not secret_name:
            if conf.prev_result is not None:
                return None
            raise CniError(
                INVALID_NETWORK_CONFIG,
                f"pod {namespace}/{name} has no annotation {ANNOTATION} naming its WireGuard Secret",
            )
        secret = client.get_secret(namespace, secret_name)
        text = k8s.secret_config_text(secret, f"secret {namespace}/{secret_name}")
    except k8s.KubernetesError as error:
        raise CniError(error.cni_code, str(error)) from None
    uid = (pod.get("metadata") or {}).get("uid")
    before_parse(len(text))
    found = _parse(text, f"secret {namespace}/{secret_name}")
    version = (secret.get("metadata") or {}).get("resourceVersion")
    return found._replace(
        secret=(namespace, secret_name),
        pod_uid=uid if isinstance(uid, str) else "",
        secret_version=version if isinstance(version, str) else "",
    )


def _allowed(node_policy: NodePolicy, key: str, value: str) -> Path:
    try:
        return node_policy.config_file(key, value)
    except PolicyError as error:
        raise CniError(INVALID_NETWORK_CONFIG, str(error)) from None


def _secret_name(pod: dict[str, Any], pod_name: str) -> str:
    """The Secret the Pod's annotation names, "" if none."""
    metadata = pod.get("metadata") or {}
    annotations = (metadata.get("annotations") or {}) if isinstance(metadata, dict) else None
    if not isinstance(annotations, dict) or not isinstance(annotations.get(ANNOTATION, ""), str):
        raise CniError(DECODING_FAILURE, f"the API server sent pod {pod_name} with annotations not all text")
    return annotations.get(ANNOTATION) or ""


def _api_client(kubeconfig_path: str, node_policy: NodePolicy) -> k8s.ApiClient:
    """The kubeconfig the network config names, or the service account of the pod we run in.

    A kubeconfig must be where the node's operator allows (NodePolicy.config_file): a tenant's network
    config must not make the agent read Secrets with the node's own credentials. NetworkAttachment-
    Definitions written for schu/wireguard-cni name a kubeconfig on the node
    (/etc/kubernetes/wg-cni.kubeconfig, allowed by default). Inside the node agent's pod that file is
    not there, and the agent's own service account is the right identity: fall back to it.
    """
    in_pod = bool(os.environ.get("KUBERNETES_SERVICE_HOST"))
    if kubeconfig_path:
        path = _allowed(node_policy, "kubeConfigPath", kubeconfig_path)
        if path.exists() or not in_pod:
            return _kept(path, lambda: kubeconfig.load_kubeconfig(str(path)))
    return _kept(kubeconfig.SERVICE_ACCOUNT_DIR / "ca.crt", kubeconfig.in_cluster)


_CLIENTS: dict[tuple[str, int, int, int], k8s.ApiClient] = {}
_CLIENTS_LOCK = threading.Lock()
MAX_CLIENTS = 16


def _kept(path: Path, make: Callable[[], k8s.ApiClient]) -> k8s.ApiClient:
    """One client per credential file as it is now (a changed file makes a new one), keeping its
    connections: inside the node agent, twenty ADDs at once would otherwise each start a TLS
    session with the API server."""
    try:
        stat = path.stat()
        key = (str(path), stat.st_ino, stat.st_size, stat.st_mtime_ns)
    except OSError:
        return make()  # in_cluster and load_kubeconfig say what is wrong with it
    with _CLIENTS_LOCK:
        client = _CLIENTS.get(key)
    if client is None:
        client = make()
        client.keep_alive = True
        with _CLIENTS_LOCK:
            if len(_CLIENTS) >= MAX_CLIENTS:
                _CLIENTS.pop(next(iter(_CLIENTS)))
            client = _CLIENTS.setdefault(key, client)
    return client


def _parse(text: str, source: str) -> PodConfig:
    try:
        return PodConfig(parse_config(text, source=source, require_address=True), text, source)
    except ConfigError as error:
        raise CniError(INVALID_NETWORK_CONFIG, str(error)) from None


def build_result(request: Request, conf: NetConf, cfg: InterfaceConfig, mtu: int) -> Result:
    """The interface with its sandbox, all its addresses and routes; a chained prevResult is extended."""
    base = conf.prev_result or Result()
    index = len(base.interfaces)
    routes = cfg.allowed_prefixes
    mac = "" if request.args.get("K8S_POD_NAMESPACE") else PODMAN_MAC
    return Result(
        interfaces=[*base.interfaces, Interface(request.ifname, sandbox=request.netns, mac=mac, mtu=mtu)],
        ips=[*base.ips, *(IPConfig(address, index) for address in cfg.addresses)],
        routes=[*base.routes, *(Route(net) for net in routes)],
        dns=base.dns,
    )


def cmd_add(request: Request, conf: NetConf, link: AgentLink, node_policy: NodePolicy) -> dict[str, Any]:
    conf.check_agent_socket(link)
    with ExitStack() as turn:
        found = wireguard_config(
            request, conf, node_policy, lambda size: turn.enter_context(link.config_turn(size))
        )
        if found is None:
            assert conf.prev_result is not None
            return conf.prev_result.render(request.cni_version)
        cfg = found.cfg
        payload: dict[str, Any] = {"pod": _pod(request), "network": conf.name, "mode": conf.mode}
        payload |= {"config": found.text, "source": found.source}
        payload["pod_uid"] = found.pod_uid or request.args.get("K8S_POD_UID", "")
        if found.secret is not None:
            payload["secret"] = {
                "namespace": found.secret[0],
                "name": found.secret[1],
                "resourceVersion": found.secret_version,
            }
        reply = _agent(link, "add", _attachment(request) | payload, parsed=cfg)
    return build_result(request, conf, cfg, int(reply.get("mtu") or cfg.mtu or 1420)).render(
        request.cni_version
    )


def cmd_del(request: Request, conf: NetConf, link: AgentLink) -> None:
    if not link.socket_path.exists():
        return  # no agent has ever run here: nothing of ours to remove
    _agent(link, "del", _attachment(request) | {"network": conf.name}, start=False)


def cmd_check(request: Request, conf: NetConf, link: AgentLink) -> None:
    conf.check_agent_socket(link)
    if conf.prev_result is None:
        raise CniError(INVALID_NETWORK_CONFIG, "CHECK needs prevResult (the result of ADD)")
    ours = [i for i in conf.prev_result.interfaces if i.name == request.ifname]
    if not ours:
        return  # a chained plugin that passed this Pod through
    if ours[0].sandbox != request.netns:
        raise CniError(
            INVALID_NETWORK_CONFIG, f"{request.ifname} is in {ours[0].sandbox}, not {request.netns}"
        )
    reply = _agent(link, "check", _attachment(request), start=False)
    if reply.get("problems"):
        raise CniError(INVALID_NETWORK_CONFIG, "; ".join(reply["problems"]))


def cmd_status(conf: NetConf, link: AgentLink) -> None:
    conf.check_agent_socket(link)
    tun_needed = conf.mode != "kernel"  # kernel WireGuard links need no TUN
    if tun_needed and not TUN_DEVICE.exists() and not os.access(TUN_DEVICE.parent, os.W_OK):
        raise CniError(NOT_AVAILABLE, f"{TUN_DEVICE} is missing and cannot be created: no userspace tunnels")
    try:
        link.call("status", {})
    except agent_client.AgentError as error:
        raise CniError(NOT_AVAILABLE, f"the pywg node agent is not available: {error}") from None


def cmd_gc(request: Request, conf: NetConf, link: AgentLink) -> None:
    """Only this network's attachments, and only with the list of those to keep: a GC without
    cni.dev/valid-attachments removes nothing."""
    valid = request.config.get("cni.dev/valid-attachments")
    if valid is None or not link.socket_path.exists():
        return
    if not conf.name:
        raise CniError(INVALID_NETWORK_CONFIG, "GC needs the network config's name")
    _agent(link, "gc", {"network": conf.name, "valid": valid}, start=False)


def _attachment(request: Request) -> dict[str, str]:
    return {"container_id": request.container_id, "ifname": request.ifname, "netns": request.netns}


def _pod(request: Request) -> str:
    namespace, name = request.args.get("K8S_POD_NAMESPACE", ""), request.args.get("K8S_POD_NAME", "")
    if namespace and name:
        return f"{namespace}/{name}"
    return name or f"container {request.container_id[:12]}"  # podman passes K8S_POD_NAME only


def _agent(
    link: AgentLink,
    op: str,
    payload: dict[str, Any],
    start: bool = True,
    parsed: InterfaceConfig | None = None,
) -> dict[str, Any]:
    try:
        reply = link.call(op, payload, start, parsed)
    except agent_client.AgentError as error:
        raise CniError(TRY_AGAIN_LATER, f"the pywg node agent did not answer: {error}") from None
    if not reply.get("ok", False) and op != "check":
        raise CniError(int(reply.get("code", INTERNAL)), str(reply.get("msg", "the node agent refused")))
    return reply


def run(
    env: Mapping[str, str],
    stdin: bytes,
    link: AgentLink | None = None,
    node_policy: NodePolicy | None = None,
) -> tuple[int, dict[str, Any] | None]:
    """Handle one invocation: (exit status, JSON to print or None).

    `link` and `node_policy` are the agent's when it runs the plugin; a runtime's run of the plugin
    takes the operator's socket and config directories from its environment (cni/policy.py).
    """
    version = "1.1.0"
    try:
        request = parse_request(env, stdin)
        version = request.cni_version
        if request.command == "VERSION":
            return 0, version_answer(version)
        conf = NetConf(request.config)
        link = link or agent_client.SocketLink(configured_socket())
        node_policy = node_policy or NodePolicy(config_dirs=configured_config_dirs())
        if request.command == "ADD":
            return 0, cmd_add(request, conf, link, node_policy)
        if request.command == "DEL":
            cmd_del(request, conf, link)
        elif request.command == "CHECK":
            cmd_check(request, conf, link)
        elif request.command == "STATUS":
            cmd_status(conf, link)
        elif request.command == "GC":
            cmd_gc(request, conf, link)
        return 0, None
    except CniError as error:
        return 1, error.to_json(version)
    except Exception as error:
        _log.exception("pywg-cni failed")
        return 1, CniError(
            INTERNAL, f"internal error in pywg-cni ({type(error).__name__}); see the node's log"
        ).to_json(version)


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="pywg-cni: %(message)s", stream=sys.stderr)
    disable_core_dumps()  # it reads Secrets
    status, output = run(os.environ, sys.stdin.buffer.read())
    if output is not None:
        sys.stdout.write(json.dumps(output) + "\n")
    return status


if __name__ == "__main__":
    raise SystemExit(main())
