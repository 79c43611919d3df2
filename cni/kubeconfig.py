"""Where the API server is and who we are to it: a kubeconfig, or the pod's ServiceAccount.

`load_kubeconfig(path)` and `in_cluster()` build a cni.k8s.ApiClient; neither connects. A kubeconfig
is read with PyYAML (the C LibYAML loader when present), so whatever kubectl reads is read: block or
flow style, anchors, aliases and merge keys, comments, JSON. Plain scalars stay text, as kubectl
decodes them into its string fields (a token of digits stays those digits). Against a hostile file:
at most MAX_KUBECONFIG_BYTES, collections nested at most MAX_YAML_DEPTH deep, and at most
MAX_YAML_NODES nodes once every alias is expanded (aliases are shared, not copied, but a walk over
the document would still see them all: billion laughs), no alias inside the node it names; all
checked on the parser's events before a node is built (LibYAML's composer recurses on the C stack).

Cluster: `server`, `certificate-authority(-data)`, `insecure-skip-tls-verify`, `tls-server-name`.
User: `token`, `tokenFile`, `client-certificate(-data)` with `client-key(-data)`. Refused with a
message: exec and auth-provider plugins, basic auth, impersonation, proxy-url. Relative file names
resolve against the kubeconfig's directory.

Errors are cni.k8s.KubernetesError (its docstring has the codes); no message quotes the document,
a token or a key.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import os
import re
import shutil
import ssl
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from cni.k8s import DEFAULT_TIMEOUT, ApiClient, KubernetesError
from cni.spec import DECODING_FAILURE, INVALID_ENVIRONMENT, INVALID_NETWORK_CONFIG, IO_FAILURE

__all__ = [
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
    "exec": "an exec credential plugin",
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
                    "tokenFile and client certificates: give it a ServiceAccount token"
                )
        c_where, u_where = f"cluster {cluster_name!r}", f"user {user_name!r}"
        server = self.string(cluster, "server", c_where, required=True)
        trust = self.trust(cluster, c_where)
        context, client_certificate = trust.new(), self.client_certificate(user, u_where)
        if client_certificate is not None:
            what = f"the client certificate of {u_where} in {self.path}"
            _load_cert_chain(context, *client_certificate, what)
        if self.string(cluster, "proxy-url", c_where):
            self.fail(f"{c_where} sets proxy-url, which pywg-cni does not support")
        token = self.string(user, "token", u_where)
        token_file = self.string(user, "tokenFile", u_where)
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


# --------------------------------------------------------------------------------------------
# TLS material.


@dataclass(frozen=True)
class _Trust:
    """How a cluster's API server is verified; new() makes a context for it."""

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
