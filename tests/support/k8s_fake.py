"""A fake Kubernetes API server on 127.0.0.1 over HTTPS, for the client in cni/k8s.py.

It serves GET /api/v1/namespaces/NS/{pods,secrets}/NAME with the JSON shapes the real
API server sends (Pod, Secret, and Status objects for 401/403/404/429/5xx), checks a
bearer token or a client certificate, and can be slowed down or told to drop
connections. Its CA, server and client certificates are made at test time and live in
memory or in its own temp dir; kubeconfigs it writes there are 0600.

Use it as the pytest fixture `fake_k8s` (pytest_plugins = ["tests.support.k8s_fake"]). Test modules
import from it before pytest loads it as a plugin, so it opts out of assertion rewriting:
PYTEST_DONT_REWRITE.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import functools
import ipaddress
import json
import os
import re
import shutil
import socket
import ssl
import struct
import tempfile
import textwrap
import threading
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DEFAULT_TOKEN = "eyJhbGciOiJSUzI1NiJ9.fake-service-account-token.c2lnbmF0dXJl"
DEFAULT_USER = "system:serviceaccount:kube-system:pywg-cni"
KUBECONFIG_FORMS = ("token", "token-file", "client-cert-data", "client-cert-files", "schu", "multus", "json")
CONFIG_ANNOTATION = "wgcni.schu.io/configsecret"
EXAMPLE_CONFIG_JSON = json.dumps(
    {
        "address": "10.13.13.210/32",
        "privateKey": "AAev16ZVYhmCQliIYKXMje1zObRp6TmET0KiUx7MJXc=",
        "peers": [
            {
                "endpoint": "192.0.2.7:51820",
                "publicKey": "+gXCSfkib2xFMeebKXIYBVZxV/Vh2mbi1dJeHCCjQmg=",
                "allowedIPs": ["10.13.13.0/24"],
                "persistentKeepalive": "25s",
            }
        ],
    }
)
_PATH = re.compile(r"^/api/v1/namespaces/([^/]+)/(pods|secrets)/([^/]+)$")
_KINDS = {"pods": "Pod", "secrets": "Secret"}


# --- certificates -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Pem:
    cert: bytes
    key: bytes


def _name(cn: str, org: str = "") -> x509.Name:
    parts = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if org:
        parts.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    return x509.Name(parts)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def make_ca(cn: str = "kubernetes") -> Pem:
    """A self-signed CA, like the cluster CA kubeadm makes."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(_name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Pem(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def issue(ca: Pem, cn: str, *, org: str = "", server: bool = False) -> Pem:
    """A leaf signed by `ca`: a server cert for 127.0.0.1/localhost, or a client cert (CN=user, O=group)."""
    ca_cert = x509.load_pem_x509_certificate(ca.cert)
    ca_key = serialization.load_pem_private_key(ca.key, None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn, org))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()),
            critical=False,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.DNSName("kubernetes.default.svc"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                ]
            ),
            critical=False,
        )
    cert = builder.sign(ca_key, hashes.SHA256())
    return Pem(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


@functools.cache
def _pki() -> tuple[Pem, Pem]:
    """One CA and server cert per test session: key generation is the slow part."""
    ca = make_ca()
    return ca, issue(ca, "kube-apiserver", server=True)


# --- the server -------------------------------------------------------------------------------


@dataclass
class Seen:
    """One request as the fake saw it (no credentials kept)."""

    method: str
    path: str
    accept: str
    user: str
    bearer: bool


@dataclass
class FakeKubernetes:
    """Objects, credentials and behaviour of the fake API server; start() it or use the fixture."""

    token: str = DEFAULT_TOKEN
    user: str = DEFAULT_USER
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="fake-k8s-")))
    tokens: dict[str, str] = field(default_factory=dict)  # token -> user
    cert_users: dict[str, str] = field(default_factory=dict)  # client cert CN -> user
    objects: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)
    forbidden: set[tuple[str, str]] = field(default_factory=set)  # (resource, namespace); "*" = any
    delay: float = 0.0  # seconds to wait before answering
    drop: int = 0  # drop this many of the next connections
    drop_with_reset: bool = False  # RST right after accept; else read the request, then close (FIN)
    dropped: int = 0
    failures: list[int] = field(default_factory=list)  # HTTP codes to answer the next requests with
    trickle: dict[str, float] = field(default_factory=dict)  # resource -> seconds between body bytes
    seen: list[Seen] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.ca, self.server_pem = _pki()
        self.tokens.setdefault(self.token, self.user)
        self.client = issue(self.ca, "pywg-cni-node", org="pywg-cni")
        self.cert_users.setdefault("pywg-cni-node", "pywg-cni-node")
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    # Lifecycle.
    def start(self) -> FakeKubernetes:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        cert, key = (
            self.write("server.crt", self.server_pem.cert),
            self.write("server.key", self.server_pem.key),
        )
        context.load_cert_chain(cert, key)
        context.load_verify_locations(cadata=self.ca.cert.decode())
        context.verify_mode = ssl.CERT_OPTIONAL  # a client certificate is one way to authenticate
        self._httpd = _Server(("127.0.0.1", 0), _Handler, self, context)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, args=(0.05,), name="fake-k8s", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> FakeKubernetes:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._httpd is not None, "start() the fake first"
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    # Objects.
    def add_pod(
        self, namespace: str, name: str, annotations: Mapping[str, str] | None = None, uid: str = ""
    ) -> dict[str, Any]:
        pod = {
            "kind": "Pod",
            "apiVersion": "v1",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "uid": uid or str(uuid.uuid4()),
                "resourceVersion": "1042",
                "creationTimestamp": "2024-05-01T12:00:00Z",
                "annotations": dict(annotations or {}),
            },
            "spec": {"containers": [{"name": "main", "image": "busybox"}], "nodeName": "node-1"},
            "status": {"phase": "Pending"},
        }
        self.objects[("pods", namespace, name)] = pod
        return pod

    def add_secret(
        self, namespace: str, name: str, data: Mapping[str, bytes | str], type_: str = "Opaque"
    ) -> dict[str, Any]:
        encoded = {
            key: base64.b64encode(value.encode() if isinstance(value, str) else value).decode()
            for key, value in data.items()
        }
        secret = {
            "kind": "Secret",
            "apiVersion": "v1",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "uid": str(uuid.uuid4()),
                "resourceVersion": "2077",
                "creationTimestamp": "2024-05-01T12:00:00Z",
            },
            "data": encoded,
            "type": type_,
        }
        self.objects[("secrets", namespace, name)] = secret
        return secret

    def forbid(self, resource: str, namespace: str = "*") -> None:
        self.forbidden.add((resource, namespace))

    def fail_next(self, code: int, count: int = 1) -> None:
        self.failures.extend([code] * count)

    # Files.
    def write(self, name: str, content: bytes | str, directory: Path | None = None) -> Path:
        """A 0600 file in the fake's workdir (or `directory`)."""
        path = (directory or self.workdir) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.unlink(missing_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(content.encode() if isinstance(content, str) else content)
        return path

    def write_kubeconfig(self, form: str = "token", *, server: str = "", ca: bytes | None = None) -> Path:
        """A kubeconfig in one of KUBECONFIG_FORMS, as kubectl, Multus or schu's installer write it."""
        server = server or self.url
        ca_pem = self.ca.cert if ca is None else ca
        ca_b64 = base64.b64encode(ca_pem).decode()
        directory = self.workdir / form
        directory.mkdir(exist_ok=True)
        if form == "token":  # `kubectl config view --raw --minify` of a ServiceAccount kubeconfig
            text = f"""\
                apiVersion: v1
                clusters:
                - cluster:
                    certificate-authority-data: {ca_b64}
                    server: {server}
                  name: fake
                contexts:
                - context:
                    cluster: fake
                    namespace: kube-system
                    user: pywg-cni
                  name: pywg-cni@fake
                current-context: pywg-cni@fake
                kind: Config
                preferences: {{}}
                users:
                - name: pywg-cni
                  user:
                    token: {self.token}
                """
        elif form == "token-file":  # relative names: they resolve against the kubeconfig's directory
            self.write("ca.crt", ca_pem, directory)
            self.write("token", self.token + "\n", directory)
            text = f"""\
                apiVersion: v1
                kind: Config
                clusters:
                  - name: fake
                    cluster:
                      server: {server}
                      certificate-authority: ca.crt
                users:
                  - name: pywg-cni
                    user:
                      tokenFile: ./token
                contexts:
                  - name: fake
                    context:
                      cluster: fake
                      user: pywg-cni
                current-context: fake
                """
        elif form == "client-cert-data":  # what kind and kubeadm write for an admin
            cert, key = (base64.b64encode(b).decode() for b in (self.client.cert, self.client.key))
            text = f"""\
                apiVersion: v1
                clusters:
                - cluster:
                    certificate-authority-data: {ca_b64}
                    server: {server}
                  name: kind-fake
                contexts:
                - context:
                    cluster: kind-fake
                    user: kind-fake
                  name: kind-fake
                current-context: kind-fake
                kind: Config
                preferences: {{}}
                users:
                - name: kind-fake
                  user:
                    client-certificate-data: {cert}
                    client-key-data: {key}
                """
        elif form == "client-cert-files":  # minikube's layout: absolute file names, an extension
            ca_path = self.write("ca.crt", ca_pem, directory)
            cert_path = self.write("client.crt", self.client.cert, directory)
            key_path = self.write("client.key", self.client.key, directory)
            text = f"""\
                apiVersion: v1
                clusters:
                - cluster:
                    certificate-authority: {ca_path}
                    extensions:
                    - extension:
                        last-update: Wed, 01 May 2024 12:00:00 UTC
                        provider: minikube.sigs.k8s.io
                        version: v1.33.0
                      name: cluster_info
                    server: {server}
                  name: minikube
                contexts:
                - context:
                    cluster: minikube
                    extensions:
                    - extension:
                        last-update: Wed, 01 May 2024 12:00:00 UTC
                        provider: minikube.sigs.k8s.io
                        version: v1.33.0
                      name: context_info
                    namespace: default
                    user: minikube
                  name: minikube
                current-context: minikube
                kind: Config
                preferences: {{}}
                users:
                - name: minikube
                  user:
                    client-certificate: {cert_path}
                    client-key: {key_path}
                """
        elif form == "schu":  # schu/wireguard-cni scripts/install: its heredoc's layout
            text = f"""\
                apiVersion: v1
                kind: Config
                clusters:
                - name: default-cluster
                  cluster:
                    certificate-authority-data: {ca_b64}
                    server: {server}
                contexts:
                - name: default-context
                  context:
                    cluster: default-cluster
                    namespace: kube-system
                    user: default-user
                current-context: default-context
                users:
                - name: default-user
                  user:
                    token: {self.token}
                """
        elif form == "multus":  # multus cmd/thin_entrypoint kubeConfigTemplate: [host] even for IPv4
            host, _, port = server.removeprefix("https://").rpartition(":")
            text = f"""\
                # Kubeconfig file for Multus CNI plugin.
                apiVersion: v1
                kind: Config
                clusters:
                - name: local
                  cluster:
                    server: https://[{host}]:{port}
                    certificate-authority-data: {ca_b64}
                users:
                - name: multus
                  user:
                    token: "{self.token}"
                contexts:
                - name: multus-context
                  context:
                    cluster: local
                    user: multus
                current-context: multus-context
                """
        elif form == "json":  # a JSON document is YAML too
            doc = {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {"name": "c", "cluster": {"server": server, "certificate-authority-data": ca_b64}}
                ],
                "users": [{"name": "u", "user": {"token": self.token}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
            text = json.dumps(doc, indent=2)
        else:
            raise ValueError(f"unknown kubeconfig form {form!r}; one of {KUBECONFIG_FORMS}")
        return self.write("kubeconfig", textwrap.dedent(text), directory)

    def write_service_account_dir(self, namespace: str = "kube-system") -> Path:
        """/var/run/secrets/kubernetes.io/serviceaccount as the kubelet projects it."""
        directory = self.workdir / "serviceaccount"
        self.write("token", self.token, directory)
        self.write("ca.crt", self.ca.cert, directory)
        self.write("namespace", namespace, directory)
        return directory

    def in_cluster_env(self) -> dict[str, str]:
        return {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": str(self.port)}

    def secret_strings(self) -> list[str]:
        """Everything that must never show up in a message: tokens, keys, Secret values."""
        out = [*self.tokens, self.token]
        for pem in (self.client, self.server_pem, self.ca):
            body = b"".join(line for line in pem.key.splitlines() if not line.startswith(b"-----"))
            out += [body.decode()[40:100], base64.b64encode(pem.key).decode()[80:140]]  # past the headers
        for (resource, _, _), obj in self.objects.items():
            if resource == "secrets":
                for value in obj.get("data", {}).values():
                    out += [value, base64.b64decode(value).decode(errors="replace")]
        return [s for s in out if len(s) >= 8]

    # Serving.
    def _answer(self, handler: _Handler) -> None:
        user, bearer = self._authenticate(handler)
        parsed = handler.path.split("?", 1)[0]
        with self._lock:
            self.seen.append(Seen(handler.command, parsed, handler.headers.get("Accept", ""), user, bearer))
            dropping = self.drop > 0
            if dropping:
                self.drop -= 1
                self.dropped += 1
            failure = self.failures.pop(0) if self.failures and not dropping else None
        if dropping:
            handler.close_connection = True
            handler.connection.close()
            return
        if self.delay and self._stop.wait(self.delay):
            return
        if failure is not None:
            handler.send_status(failure, _failure_status(failure), retry_after=1 if failure == 429 else None)
            return
        if not user:
            handler.send_status(401, _status(401, "Unauthorized", "Unauthorized"))
            return
        match = _PATH.match(parsed)
        if handler.command != "GET":
            handler.send_status(
                405, _status(405, "MethodNotAllowed", "the server does not allow this method")
            )
            return
        if match is None:
            handler.send_status(
                404, _status(404, "NotFound", "the server could not find the requested resource")
            )
            return
        namespace, resource, name = match.groups()
        if (resource, namespace) in self.forbidden or (resource, "*") in self.forbidden:
            message = (
                f'{resource} "{name}" is forbidden: User "{user}" cannot get resource "{resource}" '
                f'in API group "" in the namespace "{namespace}"'
            )
            handler.send_status(403, _status(403, "Forbidden", message, resource, name))
            return
        obj = self.objects.get((resource, namespace, name))
        if obj is None:
            handler.send_status(
                404, _status(404, "NotFound", f'{resource} "{name}" not found', resource, name)
            )
            return
        handler.send_json(200, obj, trickle=self.trickle.get(resource, 0.0), stop=self._stop)

    def _reset_now(self) -> bool:
        with self._lock:
            if self.drop > 0 and self.drop_with_reset:
                self.drop -= 1
                self.dropped += 1
                return True
        return False

    def _authenticate(self, handler: _Handler) -> tuple[str, bool]:
        header = handler.headers.get("Authorization", "")
        if header:
            scheme, _, token = header.partition(" ")
            return (self.tokens.get(token, "") if scheme == "Bearer" else ""), True
        cert = handler.connection.getpeercert() if isinstance(handler.connection, ssl.SSLSocket) else None
        if cert:
            subject = dict(pair[0] for pair in cert.get("subject", ()))
            return self.cert_users.get(str(subject.get("commonName", "")), ""), False
        return "", False


def _status(code: int, reason: str, message: str, resource: str = "", name: str = "") -> dict[str, Any]:
    """A metav1.Status as the API server writes it."""
    status: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
    }
    if resource:
        status["details"] = {"name": name, "kind": resource}
    elif code == 404:
        status["details"] = {}
    status["code"] = code
    return status


def _failure_status(code: int) -> dict[str, Any]:
    reasons = {
        429: ("TooManyRequests", "Too many requests, please try again later."),
        500: ("InternalError", "Internal error occurred: etcdserver: request timed out"),
        503: ("ServiceUnavailable", "the server is currently unable to handle the request"),
        504: ("Timeout", "the server was unable to return a response in the time allotted"),
    }
    reason, message = reasons.get(code, ("Unknown", f"HTTP {code}"))
    return _status(code, reason, message)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # socketserver's default backlog of 5 drops the SYNs of twenty ADDs at once (each then waits out
    # TCP's 1 s retransmission); a real API server listens with the kernel's default.
    request_queue_size = 4096

    def __init__(
        self, address: tuple[str, int], handler: type[_Handler], fake: FakeKubernetes, context: ssl.SSLContext
    ) -> None:
        self.fake = fake
        self.context = context
        super().__init__(address, handler)

    def finish_request(self, request: Any, client_address: Any) -> None:
        """TLS handshake here, in the worker thread, so a stuck client never blocks accept()."""
        if self.fake._reset_now():
            request.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            request.close()
            return
        request.settimeout(5)
        tls = self.context.wrap_socket(request, server_side=True, do_handshake_on_connect=False)
        try:
            tls.do_handshake()
        except (ssl.SSLError, OSError):
            _close_after_alert(tls)
            return
        try:
            self.RequestHandlerClass(tls, client_address, self)
        finally:
            with contextlib.suppress(OSError):
                tls.close()


def _close_after_alert(tls: ssl.SSLSocket) -> None:
    """Like Go's closeWriteAndWait: FIN after the TLS alert, then drain what the client still sends.

    Closing at once would answer the client's request bytes with a RST, which can make
    the client's kernel discard the alert before the client reads it.
    """
    with contextlib.suppress(OSError):
        tls.shutdown(socket.SHUT_WR)  # drops the TLS layer: recv() below reads the raw socket
        tls.settimeout(1)
        while tls.recv(4096):
            pass
    tls.close()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # TCP_NODELAY, as Go's net/http (the API server) has it: the body, written after the headers,
    # must not wait for the client's delayed ACK (40 ms of every kept connection's second answer).
    disable_nagle_algorithm = True
    server: _Server

    def do_GET(self) -> None:
        self.server.fake._answer(self)

    do_POST = do_PUT = do_DELETE = do_GET

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def send_json(
        self,
        code: int,
        obj: Mapping[str, Any],
        headers: Mapping[str, str] | None = None,
        trickle: float = 0.0,
        stop: threading.Event | None = None,
    ) -> None:
        """Answer `obj`; with `trickle`, its body one byte every `trickle` seconds (until `stop`)."""
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Audit-Id", str(uuid.uuid4()))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if not trickle:  # a kept connection, as a real API server keeps it
            self.wfile.write(body)
            return
        self.close_connection = True
        for index in range(len(body)):
            if stop is not None and stop.wait(trickle):
                return
            try:
                self.wfile.write(body[index : index + 1])
                self.wfile.flush()
            except OSError:  # the client gave up
                return

    def send_status(self, code: int, status: Mapping[str, Any], retry_after: int | None = None) -> None:
        self.send_json(code, status, {"Retry-After": str(retry_after)} if retry_after else None)


# --- pytest -----------------------------------------------------------------------------------


@pytest.fixture
def fake_k8s() -> Iterator[FakeKubernetes]:
    """A running fake API server with pod default/wireguard-pod and its Secret wireguard-config."""
    fake = FakeKubernetes().start()
    fake.add_pod("default", "wireguard-pod", {CONFIG_ANNOTATION: "wireguard-config"})
    fake.add_secret("default", "wireguard-config", {"config.json": EXAMPLE_CONFIG_JSON})
    try:
        yield fake
    finally:
        fake.stop()
