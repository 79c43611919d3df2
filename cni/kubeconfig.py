"""Where the API server is and who we are to it: a kubeconfig, or the pod's ServiceAccount.

`load_kubeconfig(path)` and `in_cluster()` build a cni.k8s.ApiClient; neither connects. A kubeconfig
is read with PyYAML (the C LibYAML loader when present), so whatever kubectl reads is read: block or
flow style, anchors, aliases and merge keys, comments, JSON. Plain scalars stay text, as kubectl
decodes them into its string fields (a token of digits stays those digits). Against a hostile file:
at most MAX_KUBECONFIG_BYTES, collections nested at most MAX_YAML_DEPTH deep, and at most
MAX_YAML_NODES nodes once every alias is expanded (aliases are shared, not copied, but a walk over
the document would still see them all: billion laughs), no alias inside the node it names; all
checked on the parser's events before a node is built (LibYAML's composer recurses on the C stack).

Cluster: `server`, `certificate-authority(-data)`, `insecure-skip-tls-verify`, `tls-server-name`,
`proxy-url` (http:// only, through HTTP CONNECT; user:password in it becomes Proxy-Authorization).
User: `token`, `tokenFile`, `client-certificate(-data)` with `client-key(-data)`, and exec credential
plugins (client.authentication.k8s.io/v1 and v1beta1), run as kubectl runs them: the command (relative
to the kubeconfig's directory when it has a slash, else from PATH) with its args, the agent's
environment plus the plugin's `env` plus KUBERNETES_EXEC_INFO (an ExecCredential with `interactive:
false`, and `cluster` when provideClusterInfo is true), no stdin, stderr to ours (the agent's log, as
kubectl leaves it on the terminal). It must print an ExecCredential of the same apiVersion with a
token or a client certificate and key within EXEC_TIMEOUT seconds; the credential is kept, per plugin
configuration, until its expirationTimestamp, and replaced once when the API server answers 401. As in
kubectl, a token or tokenFile wins over the plugin. Refused with a message: auth-provider plugins,
basic auth, impersonation, exec plugins with interactiveMode Always, socks5 and https proxies.
Relative file names resolve against the kubeconfig's directory.

Errors are cni.k8s.KubernetesError (its docstring has the codes); no message quotes the document,
a token, a key or what a plugin printed.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import datetime
import json
import os
import re
import shutil
import signal
import ssl
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import yaml

from cni.k8s import _TOKEN, DEFAULT_TIMEOUT, ApiClient, Credential, KubernetesError, Proxy
from cni.spec import (
    DECODING_FAILURE,
    INVALID_ENVIRONMENT,
    INVALID_NETWORK_CONFIG,
    IO_FAILURE,
    TRY_AGAIN_LATER,
)

__all__ = [
    "EXEC_TIMEOUT",
    "MAX_KUBECONFIG_BYTES",
    "MAX_YAML_DEPTH",
    "MAX_YAML_NODES",
    "SERVICE_ACCOUNT_DIR",
    "in_cluster",
    "load_kubeconfig",
]

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
MAX_KUBECONFIG_BYTES = 4 << 20  # a kubeconfig with a hundred clusters and their CAs is some 500 KiB
MAX_YAML_DEPTH = 100  # kubeconfigs nest about 6 deep; extensions may nest more
MAX_YAML_NODES = 100_000  # scalars and collections, every alias expanded
EXEC_TIMEOUT = 10.0  # seconds for an exec credential plugin to print its credential
MAX_EXEC_OUTPUT = 1 << 20
EXEC_API_VERSIONS = ("client.authentication.k8s.io/v1", "client.authentication.k8s.io/v1beta1")
EXEC_CLUSTER_CONFIG = "client.authentication.k8s.io/exec"  # the cluster extension passed to the plugin

# --------------------------------------------------------------------------------------------
# YAML.

_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # LibYAML's parser when PyYAML has it
_KEPT_TAGS = ("tag:yaml.org,2002:null", "tag:yaml.org,2002:merge")


class _TextLoader(_Loader):  # type: ignore[misc, valid-type]
    """Safe loading; plain scalars resolve to text except null and the merge key `<<`."""


_TextLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag in _KEPT_TAGS]
    for first, resolvers in _Loader.yaml_implicit_resolvers.items()
}


class YamlError(ValueError):
    """What is wrong and where (line and column), never the text there (it may be a token)."""


def _load_yaml(text: str) -> Any:
    """The one document in `text`, after the bounds above are checked."""
    try:
        _check_shape(text)
        loader = _TextLoader(text)
        try:
            return loader.get_single_data()
        finally:
            loader.dispose()
    except yaml.YAMLError as error:
        raise YamlError(_describe(error, text)) from None


def _check_shape(text: str) -> None:
    """Depth and expanded size from the parser's events, before any node is built."""
    loader = _TextLoader(text)
    try:
        expanded: dict[str, tuple[int, int]] = {}  # anchor -> (nodes with aliases expanded, height)
        open_: list[list[Any]] = []  # [nodes, height, anchor] of each collection not yet ended
        total = 0
        while loader.check_event():
            event = loader.get_event()
            if isinstance(event, yaml.CollectionStartEvent):
                if len(open_) >= MAX_YAML_DEPTH:
                    raise YamlError(f"collections nested deeper than {MAX_YAML_DEPTH}{_at(event.start_mark)}")
                open_.append([1, 1, event.anchor])
                total += 1
            elif isinstance(event, yaml.ScalarEvent | yaml.AliasEvent | yaml.CollectionEndEvent):
                if isinstance(event, yaml.CollectionEndEvent):
                    nodes, height, anchor = open_.pop()
                elif isinstance(event, yaml.ScalarEvent):
                    nodes, height, anchor = 1, 0, event.anchor
                    total += 1
                else:
                    if any(entry[2] == event.anchor for entry in open_):
                        raise YamlError(f"an alias inside the node it names{_at(event.start_mark)}")
                    if event.anchor not in expanded:
                        continue  # the composer says "found undefined alias", with its position
                    (nodes, height), anchor = expanded[event.anchor], None
                    if len(open_) + height > MAX_YAML_DEPTH:
                        raise YamlError(
                            f"an alias nests collections deeper than {MAX_YAML_DEPTH}{_at(event.start_mark)}"
                        )
                    total += nodes
                if total > MAX_YAML_NODES:
                    raise YamlError(
                        f"more than {MAX_YAML_NODES} nodes with its aliases expanded{_at(event.start_mark)}"
                    )
                if anchor is not None:
                    expanded[anchor] = (nodes, height)
                if open_:
                    open_[-1][0] += nodes
                    open_[-1][1] = max(open_[-1][1], height + 1)
    finally:
        loader.dispose()


def _describe(error: yaml.YAMLError, text: str) -> str:
    if isinstance(error, yaml.MarkedYAMLError) and "maximum nesting depth" in str(error.problem):
        # LibYAML from 0.2.6 (PyYAML 6.0.4's wheels) stops at 1000 levels as it reads ahead, before
        # _check_shape sees the 101st collection start: the same limit, said the same way.
        return f"collections nested deeper than {MAX_YAML_DEPTH}{_at(error.problem_mark)}"
    if isinstance(error, yaml.MarkedYAMLError):
        parts = [f"{_quiet(error.context)}{_at(error.context_mark)}"] if error.context else []
        if error.problem:
            parts.append(f"{_quiet(error.problem)}{_at(error.problem_mark)}")
        return ", ".join(parts) or "not YAML"
    if isinstance(error, yaml.reader.ReaderError):
        line = text.count("\n", 0, error.position) + 1
        return f"a character YAML does not allow (#x{error.character:x}) on line {line}"
    return type(error).__name__


def _at(mark: Any) -> str:
    return f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""


def _quiet(text: str) -> str:
    """PyYAML's message without the document's text: keeps a quoted character and '<token names>'."""
    return re.sub(r"'(?!<[^']*>')[^']{3,}'|\"[^\"]{3,}\"", "'...'", text)


# --------------------------------------------------------------------------------------------
# Building clients.


def load_kubeconfig(
    path: str | os.PathLike[str],
    *,
    context: str | None = None,
    connect_timeout: float = DEFAULT_TIMEOUT,
    read_timeout: float = DEFAULT_TIMEOUT,
) -> ApiClient:
    """A client for the current context (or `context`) of the kubeconfig at `path`; see the module doc."""
    path = Path(path)
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_KUBECONFIG_BYTES + 1)
    except OSError as error:
        raise KubernetesError(IO_FAILURE, f"cannot read kubeconfig {path}: {error.strerror}") from None
    if len(raw) > MAX_KUBECONFIG_BYTES:
        raise KubernetesError(
            DECODING_FAILURE, f"kubeconfig {path} is over {MAX_KUBECONFIG_BYTES >> 20} MiB: not a kubeconfig"
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise KubernetesError(DECODING_FAILURE, f"kubeconfig {path} is not UTF-8 text") from None
    try:
        doc = _load_yaml(text)
    except YamlError as error:
        raise KubernetesError(DECODING_FAILURE, f"kubeconfig {path} is not valid YAML: {error}") from None
    return _Kubeconfig(doc, path).client(context, connect_timeout, read_timeout)


def in_cluster(
    service_account_dir: str | os.PathLike[str] = SERVICE_ACCOUNT_DIR,
    *,
    environ: Mapping[str, str] | None = None,
    connect_timeout: float = DEFAULT_TIMEOUT,
    read_timeout: float = DEFAULT_TIMEOUT,
) -> ApiClient:
    """A client for the pod's own ServiceAccount (KUBERNETES_SERVICE_HOST/PORT, token, ca.crt).

    The token file is read at every request: the kubelet rotates the projected token.
    """
    env = os.environ if environ is None else environ
    host, port = env.get("KUBERNETES_SERVICE_HOST", ""), env.get("KUBERNETES_SERVICE_PORT", "")
    if not host or not port:
        raise KubernetesError(
            INVALID_ENVIRONMENT,
            "KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are not set, so this is not a pod with "
            "in-cluster credentials: name a kubeconfig (kubeConfigPath) in the network config",
        )
    directory = Path(service_account_dir)
    token_file = directory / "token"
    if not token_file.is_file():
        raise KubernetesError(
            IO_FAILURE,
            f"no ServiceAccount token at {token_file}: is automountServiceAccountToken disabled for this "
            "pod?",
        )
    ca_file = directory / "ca.crt"
    context = _verifying_context(_read_file(ca_file, "the in-cluster CA"), f"CA file {ca_file}")
    namespace = "default"
    with contextlib.suppress(OSError, UnicodeDecodeError):
        namespace = (directory / "namespace").read_text(encoding="utf-8").strip() or namespace
    bracketed = f"[{host}]" if ":" in host else host
    return ApiClient(
        f"https://{bracketed}:{port}",
        context,
        token_file=token_file,
        namespace=namespace,
        credentials=f"the ServiceAccount token {token_file}",
        origin=f"the in-cluster config (KUBERNETES_SERVICE_HOST/PORT, {directory})",
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
    )


_UNSUPPORTED_USER = {
    "auth-provider": "an auth-provider plugin",
    "username": "basic auth",
    "password": "basic auth",
    "as": "impersonation",
    "as-uid": "impersonation",
    "as-groups": "impersonation",
    "as-user-extra": "impersonation",
}


class _Kubeconfig:
    def __init__(self, doc: Any, path: Path) -> None:
        self.path = path
        self.base = path.parent
        if not isinstance(doc, dict):
            self.fail("is not a YAML mapping with clusters, users and contexts")
        kind = doc.get("kind")
        if kind not in (None, "Config"):
            self.fail(f"has kind {kind!r}, not Config")
        self.doc: dict[str, Any] = doc

    def fail(self, message: str, code: int = INVALID_NETWORK_CONFIG) -> Any:
        raise KubernetesError(code, f"kubeconfig {self.path} {message}")

    def client(self, override: str | None, connect_timeout: float, read_timeout: float) -> ApiClient:
        contexts = self.named_list("contexts")
        name = override or self.string(self.doc, "current-context", "current-context")
        if not name:
            if len(contexts) != 1:
                self.fail(f"has no current-context; its contexts are: {_names(contexts)}")
            name = next(iter(contexts))
        if name not in contexts:
            self.fail(f"has no context {name!r}; its contexts are: {_names(contexts)}")
        ctx = self.section(contexts[name], "context", f"context {name!r}")
        cluster_name = self.string(ctx, "cluster", f"context {name!r}", required=True)
        clusters = self.named_list("clusters")
        if cluster_name not in clusters:
            self.fail(
                f"context {name!r} names cluster {cluster_name!r}, which is not among: {_names(clusters)}"
            )
        cluster = self.section(clusters[cluster_name], "cluster", f"cluster {cluster_name!r}")
        user_name = self.string(ctx, "user", f"context {name!r}")
        user: dict[str, Any] = {}
        if user_name:
            users = self.named_list("users")
            if user_name not in users:
                self.fail(f"context {name!r} names user {user_name!r}, which is not among: {_names(users)}")
            user = self.section(users[user_name], "user", f"user {user_name!r}")
        where = f"kubeconfig {self.path}" + (f" (user {user_name!r})" if user_name else "")
        for key, what in _UNSUPPORTED_USER.items():
            if user.get(key):
                self.fail(
                    f"user {user_name!r} authenticates with {what} ({key}); pywg-cni supports token, "
                    "tokenFile, client certificates and exec credential plugins: give it a ServiceAccount "
                    "token"
                )
        c_where, u_where = f"cluster {cluster_name!r}", f"user {user_name!r}"
        server = self.string(cluster, "server", c_where, required=True)
        trust = self.trust(cluster, c_where)
        context, client_certificate = trust.new(), self.client_certificate(user, u_where)
        if client_certificate is not None:
            what = f"the client certificate of {u_where} in {self.path}"
            _load_cert_chain(context, *client_certificate, what)
        token = self.string(user, "token", u_where)
        token_file = self.string(user, "tokenFile", u_where)
        source = None
        if user.get("exec") is not None and not (token or token_file):  # kubectl: a token wins
            plugin = self.exec_plugin(user, u_where, cluster, c_where, server, trust)
            source = _ExecCredentials(plugin, trust)
        return ApiClient(
            server,
            context,
            token=token,
            token_file=self.resolve(token_file) if token_file else "",
            tls_server_name=self.string(cluster, "tls-server-name", c_where),
            namespace=self.string(ctx, "namespace", f"context {name!r}") or "default",
            credentials=f"the credentials in {where}",
            origin=f"kubeconfig {self.path}",
            client_certificate=client_certificate is not None,
            credential_source=source,
            proxy=self.proxy(cluster, c_where),
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
        )

    # Cluster.
    def trust(self, cluster: dict[str, Any], c_where: str) -> _Trust:
        """How to verify the API server: one CA bundle, the system's, or not at all."""
        insecure = self.boolean(cluster, "insecure-skip-tls-verify", c_where)
        ca_data = self.string(cluster, "certificate-authority-data", c_where)
        ca_file = self.string(cluster, "certificate-authority", c_where)
        if insecure and (ca_data or ca_file):
            self.fail(
                f"{c_where} sets both a certificate authority and insecure-skip-tls-verify (kubectl refuses "
                "this too)"
            )
        if insecure:
            return _Trust(None, "", insecure=True)
        if ca_data:
            pem = self.base64(ca_data, f"{c_where} certificate-authority-data")
            trust = _Trust(pem, f"certificate-authority-data of {c_where} in {self.path}")
        elif ca_file:
            path = self.resolve(ca_file)
            trust = _Trust(_read_file(path, "certificate-authority"), f"CA file {path}")
        else:
            return _Trust(None, "")
        trust.new()  # a CA that cannot be used is a configuration error now, not at the first request
        return trust

    def proxy(self, cluster: dict[str, Any], c_where: str) -> Proxy | None:
        url = self.string(cluster, "proxy-url", c_where)
        if not url:
            return None
        try:
            parts = urlsplit(url)
            port = parts.port or 80
        except ValueError:
            return self.fail(f"{c_where}: proxy-url is not a URL")
        scheme = parts.scheme.lower()
        if scheme != "http":
            return self.fail(
                f"{c_where}: proxy-url is a {scheme or 'scheme-less'} proxy; pywg-cni tunnels through "
                "http:// proxies only (HTTP CONNECT)"
            )
        if not parts.hostname or parts.path not in ("", "/") or parts.query or parts.fragment:
            return self.fail(f"{c_where}: proxy-url must be http://HOST[:PORT], or http://USER:PASSWORD@HOST")
        headers = {}
        if parts.username is not None:
            pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
            headers["Proxy-Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode("ascii")
        return Proxy(parts.hostname, port, headers)

    # User.
    def client_certificate(self, user: dict[str, Any], u_where: str) -> tuple[bytes, bytes] | None:
        cert_data = self.string(user, "client-certificate-data", u_where)
        key_data = self.string(user, "client-key-data", u_where)
        cert_file = self.string(user, "client-certificate", u_where)
        key_file = self.string(user, "client-key", u_where)
        has_cert, has_key = bool(cert_data or cert_file), bool(key_data or key_file)
        if has_cert != has_key:
            self.fail(f"{u_where} has a client certificate without its key, or a key without its certificate")
        if not has_cert:
            return None
        cert = (
            self.base64(cert_data, f"{u_where} client-certificate-data")
            if cert_data
            else _read_file(self.resolve(cert_file), "client-certificate")
        )
        key = (
            self.base64(key_data, f"{u_where} client-key-data")
            if key_data
            else _read_file(self.resolve(key_file), "client-key")
        )
        return cert, key

    def exec_plugin(
        self,
        user: dict[str, Any],
        u_where: str,
        cluster: dict[str, Any],
        c_where: str,
        server: str,
        trust: _Trust,
    ) -> _ExecPlugin:
        spec = self.section(user, "exec", u_where)
        where = f"the exec credential plugin of {u_where} in kubeconfig {self.path}"
        api_version = self.string(spec, "apiVersion", f"{u_where} exec", required=True)
        if api_version not in EXEC_API_VERSIONS:
            removed = " (removed in Kubernetes 1.24)" if api_version.endswith("/v1alpha1") else ""
            self.fail(
                f"{u_where}: exec apiVersion {api_version!r}{removed} is not one of "
                f"{', '.join(EXEC_API_VERSIONS)}"
            )
        mode = self.string(spec, "interactiveMode", f"{u_where} exec")
        if not mode and api_version.endswith("/v1"):
            self.fail(f"{u_where}: exec needs interactiveMode with apiVersion {api_version} (as in kubectl)")
        if mode not in ("", "Never", "IfAvailable", "Always"):
            self.fail(f"{u_where}: exec interactiveMode must be Never, IfAvailable or Always")
        if mode == "Always":
            self.fail(
                f"{u_where}: the exec plugin wants a terminal (interactiveMode Always), and pywg-cni runs it "
                "without one: give it credentials it can get without asking"
            )
        command = self.string(spec, "command", f"{u_where} exec", required=True)
        if "/" in command:
            command = str(self.resolve(command))
        args = spec.get("args") or []
        if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
            self.fail(f"{u_where}: exec args must be a list of strings")
        env = []
        for n, entry in enumerate(spec.get("env") or []):
            if not (isinstance(entry, dict) and isinstance(entry.get("name"), str)):
                self.fail(f"{u_where}: exec env[{n}] must be a mapping with a name and a value")
            value = entry.get("value")
            if not isinstance(value, str | None) or not entry["name"] or "=" in entry["name"]:
                self.fail(f"{u_where}: exec env[{n}] must be a mapping with a name and a value")
            env.append((entry["name"], value or ""))
        cluster_info = ""
        if self.boolean(spec, "provideClusterInfo", f"{u_where} exec"):
            cluster_info = self.cluster_info(cluster, c_where, server, trust)
        return _ExecPlugin(
            command,
            tuple(args),
            tuple(env),
            api_version,
            cluster_info,
            install_hint=_clip(self.string(spec, "installHint", f"{u_where} exec")),
            where=where,
        )

    def cluster_info(self, cluster: dict[str, Any], c_where: str, server: str, trust: _Trust) -> str:
        """ExecCredential spec.cluster (JSON), what a plugin with provideClusterInfo gets."""
        info: dict[str, Any] = {"server": server}
        for key in ("tls-server-name", "proxy-url"):
            if value := self.string(cluster, key, c_where):
                info[key] = value
        if trust.insecure:
            info["insecure-skip-tls-verify"] = True
        if trust.ca is not None:
            info["certificate-authority-data"] = base64.b64encode(trust.ca).decode("ascii")
        extensions = cluster.get("extensions") or []
        if not isinstance(extensions, list):
            self.fail(f"{c_where}: extensions must be a list")
        for entry in extensions:
            if isinstance(entry, dict) and entry.get("name") == EXEC_CLUSTER_CONFIG:
                info["config"] = entry.get("extension")
        try:
            return json.dumps(info, sort_keys=True)
        except (TypeError, ValueError):  # a !!binary or !!float value with no JSON form
            return self.fail(f"{c_where}: the extension {EXEC_CLUSTER_CONFIG} has a value JSON cannot hold")

    # Typed access.
    def named_list(self, section: str) -> dict[str, dict[str, Any]]:
        entries = self.doc.get(section) or []
        if not isinstance(entries, list):
            self.fail(f"{section} must be a list")
        out: dict[str, dict[str, Any]] = {}
        for n, entry in enumerate(entries):
            if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
                self.fail(f"{section}[{n}] must be a mapping with a name")
            out.setdefault(entry["name"], entry)
        return out

    def section(self, entry: dict[str, Any], key: str, where: str) -> dict[str, Any]:
        value = entry.get(key) or {}
        if not isinstance(value, dict):
            self.fail(f"{where}: {key} must be a mapping")
        return value

    def string(self, mapping: dict[str, Any], key: str, where: str, *, required: bool = False) -> str:
        value = mapping.get(key)
        if value is None or value == "":
            if required:
                self.fail(f"{where} has no {key}")
            return ""
        if not isinstance(value, str):
            self.fail(f"{where}: {key} must be a string")
        return value

    def boolean(self, mapping: dict[str, Any], key: str, where: str) -> bool:
        value = mapping.get(key)
        if value is None or isinstance(value, bool):
            return bool(value)
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        return self.fail(f"{where}: {key} must be true or false")

    def base64(self, text: str, where: str) -> bytes:
        try:
            return base64.b64decode("".join(text.split()), validate=True)
        except (binascii.Error, ValueError):
            return self.fail(f"{where} is not valid base64", DECODING_FAILURE)

    def resolve(self, name: str) -> Path:
        if "\0" in name:
            self.fail(f"names a file {name!r} with a NUL character in it")
        try:
            path = Path(name).expanduser()
        except RuntimeError:  # ~user of an unknown user
            return self.fail(f"names a file {name!r} in the home directory of an unknown user")
        return path if path.is_absolute() else self.base / path


def _names(entries: Mapping[str, Any]) -> str:
    return ", ".join(repr(n) for n in entries) or "(none)"


def _clip(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --------------------------------------------------------------------------------------------
# TLS material.


@dataclass(frozen=True)
class _Trust:
    """How a cluster's API server is verified; new() makes a context, for a client certificate of its own."""

    ca: bytes | None  # None: the system's CA store (or nothing, when insecure)
    where: str
    insecure: bool = False

    def new(self) -> ssl.SSLContext:
        if self.insecure:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            return context
        if self.ca is None:
            return ssl.create_default_context()
        return _verifying_context(self.ca, self.where)


def _read_file(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise KubernetesError(IO_FAILURE, f"cannot read {what} {path}: {error.strerror}") from None


def _verifying_context(ca: bytes, where: str) -> ssl.SSLContext:
    """Verifies the server against exactly this CA bundle (PEM or DER), names checked."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # check_hostname and CERT_REQUIRED by default
    try:
        if ca.lstrip().startswith(b"-----BEGIN"):
            context.load_verify_locations(cadata=ca.decode("ascii"))
        else:
            context.load_verify_locations(cadata=ca)
    except (ssl.SSLError, ValueError, UnicodeDecodeError):
        raise KubernetesError(INVALID_NETWORK_CONFIG, f"{where} holds no usable CA certificate") from None
    return context


def _load_cert_chain(context: ssl.SSLContext, cert: bytes, key: bytes, where: str) -> None:
    """ssl wants file names: an anonymous memory fd, else a 0600 file in a 0700 dir, removed at once."""

    def refuse_password() -> str:
        raise KubernetesError(INVALID_NETWORK_CONFIG, f"{where}: the key is encrypted; give it unencrypted")

    try:
        with _secret_files(cert, key) as (cert_path, key_path):
            context.load_cert_chain(cert_path, key_path, password=refuse_password)
    except ssl.SSLError:
        raise KubernetesError(
            INVALID_NETWORK_CONFIG,
            f"{where} is unusable: not PEM, or the key does not belong to the certificate",
        ) from None
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise KubernetesError(IO_FAILURE, f"{where}: cannot stage it for TLS ({reason})") from None


@contextlib.contextmanager
def _secret_files(*blobs: bytes) -> Iterator[list[str]]:
    fds = _memory_files(blobs)
    if fds is not None:
        try:
            yield [f"/proc/self/fd/{fd}" for fd in fds]
        finally:
            for fd in fds:
                os.close(fd)
        return
    directory = tempfile.mkdtemp(prefix="pywg-cni-tls-")  # 0700
    try:
        paths = []
        for n, blob in enumerate(blobs):
            name = os.path.join(directory, str(n))
            fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(blob)
            paths.append(name)
        yield paths
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _memory_files(blobs: tuple[bytes, ...]) -> list[int] | None:
    """Anonymous memory fds holding `blobs`, reachable as /proc/self/fd/N; None where that fails."""
    if not hasattr(os, "memfd_create"):
        return None
    fds: list[int] = []
    try:
        for blob in blobs:
            fds.append(os.memfd_create("pywg-cni-tls", os.MFD_CLOEXEC))
            os.write(fds[-1], blob)
        if all(os.path.exists(f"/proc/self/fd/{fd}") for fd in fds):
            return fds
    except OSError:
        pass
    for fd in fds:
        os.close(fd)
    return None


# --------------------------------------------------------------------------------------------
# Exec credential plugins.


@dataclass(frozen=True)
class _ExecPlugin:
    """One plugin configuration; equal configurations share the credential they were issued."""

    command: str
    args: tuple[str, ...]
    env: tuple[tuple[str, str], ...] = field(repr=False)
    api_version: str
    cluster_info: str  # JSON for ExecCredential spec.cluster, "" without provideClusterInfo
    install_hint: str = field(compare=False)
    where: str = field(compare=False)

    def run(self) -> _Issued:
        """Runs the plugin once and checks what it printed."""
        spec: dict[str, Any] = {"interactive": False}
        if self.cluster_info:
            spec["cluster"] = json.loads(self.cluster_info)
        info = {"apiVersion": self.api_version, "kind": "ExecCredential", "spec": spec}
        env = {**os.environ, **dict(self.env), "KUBERNETES_EXEC_INFO": json.dumps(info)}
        name = os.path.basename(self.command)
        try:
            process = subprocess.Popen(
                [self.command, *self.args],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                env=env,
                start_new_session=True,  # its own process group: a timeout kills what it started too
            )
        except FileNotFoundError:
            hint = f" ({self.install_hint})" if self.install_hint else ""
            raise KubernetesError(
                INVALID_NETWORK_CONFIG, f"{self.where}: the command {self.command!r} is not there{hint}"
            ) from None
        except OSError as error:
            raise KubernetesError(
                INVALID_NETWORK_CONFIG,
                f"{self.where}: cannot run {self.command!r} ({error.strerror or type(error).__name__})",
            ) from None
        try:
            out, _ = process.communicate(timeout=EXEC_TIMEOUT)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            assert process.stdout is not None
            process.stdout.close()
            process.wait()
            raise KubernetesError(
                TRY_AGAIN_LATER,
                f"{self.where}: {name} did not print a credential within {EXEC_TIMEOUT:g} s (killed); try "
                "again later",
            ) from None
        if process.returncode != 0:
            how = (
                f"was killed by signal {-process.returncode}"
                if process.returncode < 0
                else f"exited with status {process.returncode}"
            )
            raise KubernetesError(
                INVALID_NETWORK_CONFIG, f"{self.where}: {name} {how} (its standard error is in our log)"
            )
        return self.parse(out, name)

    def parse(self, out: bytes, name: str) -> _Issued:
        def bad(problem: str) -> KubernetesError:
            return KubernetesError(INVALID_NETWORK_CONFIG, f"{self.where}: {name} printed {problem}")

        if len(out) > MAX_EXEC_OUTPUT:
            raise bad(f"over {MAX_EXEC_OUTPUT >> 20} MiB, not an ExecCredential")
        try:
            doc = json.loads(out)
        except (ValueError, RecursionError):
            raise bad("something that is not JSON, not an ExecCredential") from None
        if not isinstance(doc, dict) or doc.get("kind") != "ExecCredential":
            raise bad("JSON that is not an ExecCredential")
        if doc.get("apiVersion") != self.api_version:
            raise bad(f"an ExecCredential of another apiVersion than the kubeconfig's {self.api_version}")
        status = doc.get("status")
        if not isinstance(status, dict):
            raise bad("an ExecCredential without a status")
        token, cert, key = (status.get(k) or "" for k in ("token", "clientCertificateData", "clientKeyData"))
        if not all(isinstance(v, str) for v in (token, cert, key)):
            raise bad("an ExecCredential whose token, clientCertificateData or clientKeyData is not text")
        if token and not _TOKEN.match(token):
            raise bad("a token with characters a bearer token cannot have (spaces, line breaks or non-ASCII)")
        if bool(cert) != bool(key):
            raise bad("a client certificate without its key, or a key without its certificate")
        if not token and not cert:
            raise bad("an ExecCredential with neither a token nor a client certificate")
        expires = None
        if (stamp := status.get("expirationTimestamp")) is not None:
            try:
                when = datetime.datetime.fromisoformat(stamp) if isinstance(stamp, str) else None
            except ValueError:
                when = None
            if when is None or when.tzinfo is None:
                raise bad("an expirationTimestamp that is not an RFC 3339 time")
            expires = when.timestamp()
        return _Issued(token, cert.encode(), key.encode(), expires)


@dataclass(frozen=True)
class _Issued:
    token: str = field(repr=False)
    cert: bytes = field(repr=False)
    key: bytes = field(repr=False)
    expires: float | None  # seconds since the epoch; None: until the API server refuses it

    def valid(self) -> bool:
        return self.expires is None or time.time() < self.expires


_issued: dict[_ExecPlugin, _Issued] = {}
_plugin_locks: dict[_ExecPlugin, threading.Lock] = {}
_issued_lock = threading.Lock()


class _ExecCredentials:
    """A cni.k8s.CredentialSource: the plugin's credential, shared by every client with that plugin."""

    def __init__(self, plugin: _ExecPlugin, trust: _Trust) -> None:
        self.plugin = plugin
        self.trust = trust
        self._contexts: dict[_Issued, ssl.SSLContext] = {}

    def get(self) -> Credential:
        with _issued_lock:
            lock = _plugin_locks.setdefault(self.plugin, threading.Lock())
        with lock:  # one run at a time per plugin: parallel ADDs wait for the same credential
            issued = _issued.get(self.plugin)
            if issued is None or not issued.valid():
                issued = self.plugin.run()
                _issued[self.plugin] = issued
        if not issued.cert:
            return Credential(issued.token, None)
        context = self._contexts.get(issued)
        if context is None:
            context = self.trust.new()
            where = f"the client certificate from {self.plugin.where}"
            _load_cert_chain(context, issued.cert, issued.key, where)
            self._contexts = {issued: context}
        return Credential(issued.token, context)

    def expire(self, token: str) -> None:
        with _issued_lock:
            issued = _issued.get(self.plugin)
            if issued is not None and issued.token == token:
                del _issued[self.plugin]
