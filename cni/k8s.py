"""A small Kubernetes API client, with the errors an operator can act on: GET a Pod or a Secret (the
plugin's ADD), and for the node agent's live operations (issue 12) Leases (get, create, update),
Events (create, patch) and a watch of one Secret by name.

Only the standard library: http.client over an ssl context built by cni/kubeconfig.py (from a
kubeconfig or the in-cluster ServiceAccount), one TLS connection per request (or, with keep_alive,
one kept per thread), each watch on a connection of its own, TCP_NODELAY, through an HTTP CONNECT
proxy when the kubeconfig names one. docs/design.md ("Kubernetes API client") says why
this and not a client library, with the measurements.

Every failure is a `KubernetesError` whose `cni_code` is a CNI error code and whose
message tells an operator what to change; it ends up in `kubectl get events`. Messages
and reprs never carry a token, a key or Secret data.

Error codes:
  3  UNKNOWN_CONTAINER       the Pod is gone (404 on the Pod).
  4  INVALID_ENVIRONMENT     in_cluster() outside a pod (no KUBERNETES_SERVICE_HOST/PORT).
  5  IO_FAILURE              a kubeconfig, token, CA or certificate file cannot be read.
  6  DECODING_FAILURE        the kubeconfig is not YAML/JSON; an answer or a Secret value does not decode.
  7  INVALID_NETWORK_CONFIG  something an operator has to fix, so retrying does not help: the kubeconfig
                             is incomplete or uses an unsupported auth method; an exec credential plugin
                             is missing, fails or prints no usable credential; the API server rejects
                             the credentials (401) or RBAC forbids the read (403); the Secret is missing
                             or has no usable key; TLS verification fails (wrong CA, wrong name, client
                             certificate rejected); `server` is not an API server; the proxy wants
                             credentials (407).
  11 TRY_AGAIN_LATER         transient: unreachable, refused, reset twice, timed out, 5xx, 429, 408; an
                             exec credential plugin that does not finish in time.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import http.client
import json
import os
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, NamedTuple, Protocol, TypeVar
from urllib.parse import quote, urlencode

from cni.spec import (
    DECODING_FAILURE,
    INVALID_NETWORK_CONFIG,
    IO_FAILURE,
    TRY_AGAIN_LATER,
    UNKNOWN_CONTAINER,
)

__all__ = [
    "CONFIG_SECRET_ANNOTATION",
    "DEFAULT_TIMEOUT",
    "ApiClient",
    "Credential",
    "CredentialSource",
    "KubernetesError",
    "Proxy",
    "Watch",
    "secret_config_text",
]

DEFAULT_TIMEOUT = 5.0
CONFIG_SECRET_ANNOTATION = "wgcni.schu.io/configsecret"
RBAC_HINT = "deploy/rbac.yaml"
MAX_BODY = 16 << 20  # a Secret is at most 1 MiB; a Pod with many annotations is still far below this
USER_AGENT = "pywg-cni"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
# A watch ends after this long (the server closes it; the caller watches again from where it got);
# each wait for a line gets WATCH_GRACE more, so a connection that died silently is noticed.
WATCH_SECONDS = 300
WATCH_GRACE = 30
API_GROUPS = {"pods": "", "secrets": "", "events": "", "leases": "coordination.k8s.io/v1"}
VERBS = {"GET": "get", "POST": "create", "PUT": "update", "PATCH": "patch"}
Answer = tuple[int, str, bytes, dict[str, str]]  # status, reason, body, headers (lower-case names)
T = TypeVar("T")

# RFC 1123 subdomain: what the API server accepts as a namespace, Pod or Secret name.
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
_TOKEN = re.compile(r"^[\x21-\x7e]+$")  # printable ASCII, no spaces: safe in an Authorization header
_TUNNEL_FAILED = "Tunnel connection failed:"
_RESETS = (
    ConnectionResetError,  # includes http.client.RemoteDisconnected
    ConnectionAbortedError,
    BrokenPipeError,
    ssl.SSLEOFError,
    ssl.SSLZeroReturnError,
)
# OpenSSL reasons for a TLS alert the server sends when it rejects our client certificate.
_CLIENT_CERT_REJECTED = (
    "TLSV1_ALERT_UNKNOWN_CA",
    "SSLV3_ALERT_BAD_CERTIFICATE",
    "SSLV3_ALERT_CERTIFICATE_UNKNOWN",
    "SSLV3_ALERT_CERTIFICATE_EXPIRED",
    "SSLV3_ALERT_CERTIFICATE_REVOKED",
    "TLSV13_ALERT_CERTIFICATE_REQUIRED",
    "TLSV1_ALERT_ACCESS_DENIED",
    "TLSV1_ALERT_DECRYPT_ERROR",
)


class KubernetesError(Exception):
    """A failed Kubernetes request; `cni_code` is the CNI error code for the runtime, `status` the
    HTTP status the API server answered (0: none, the request did not get that far) and `reason`
    the reason of its Status object (NotFound, AlreadyExists, Conflict, Expired, Gone, ...)."""

    def __init__(self, cni_code: int, message: str, status: int = 0, reason: str = "") -> None:
        super().__init__(message)
        self.cni_code = cni_code
        self.message = message
        self.status = status
        self.reason = reason


class Credential(NamedTuple):
    """What an exec credential plugin issued: a bearer token and/or a TLS context with its client cert."""

    token: str
    ssl_context: ssl.SSLContext | None  # None: the client's own (the plugin issued no client certificate)


class CredentialSource(Protocol):
    """Credentials that can change while a client lives (cni/kubeconfig.py's exec credential plugins)."""

    def get(self) -> Credential:
        """The current credential: cached while it is valid, else issued anew (may raise KubernetesError)."""
        ...

    def expire(self, token: str) -> None:
        """The API server rejected `token` (401): forget it, if it is still the current one."""
        ...


class Proxy(NamedTuple):
    """An HTTP proxy the client tunnels through (HTTP CONNECT); `headers` may hold Proxy-Authorization."""

    host: str
    port: int
    headers: Mapping[str, str]

    def __repr__(self) -> str:  # never the headers: they may hold the proxy's password
        return f"Proxy(http://{self.host}:{self.port})"


# --------------------------------------------------------------------------------------------
# The client.


class ApiClient:
    """GETs objects from one API server with one set of credentials.

    The token file (if any) is read at every request, so a rotated ServiceAccount token
    is picked up; it wins over a literal token when both are set (as in client-go). Without
    either, an exec credential plugin (`credential_source`) is asked at every request; its
    credential is cached until it expires, and a 401 makes it issue a new one, once.
    """

    def __init__(
        self,
        server: str,
        ssl_context: ssl.SSLContext,
        *,
        token: str = "",
        token_file: str | os.PathLike[str] = "",
        tls_server_name: str = "",
        namespace: str = "default",
        credentials: str = "the configured credentials",
        origin: str = "the client configuration",
        client_certificate: bool = False,
        credential_source: CredentialSource | None = None,
        proxy: Proxy | None = None,
        connect_timeout: float = DEFAULT_TIMEOUT,
        read_timeout: float = DEFAULT_TIMEOUT,
        keep_alive: bool = False,
    ) -> None:
        self.host, self.port, self.prefix = _parse_server(server, origin)
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.server = f"https://{host}:{self.port}{self.prefix}"
        self.ssl_context = ssl_context
        self.tls_server_name = tls_server_name
        self.namespace = namespace
        self.credentials = credentials
        self.origin = origin
        self.client_certificate = client_certificate  # only to explain a TLS close after the handshake
        self.credential_source = credential_source
        self.proxy = proxy
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        # A long-lived client (the node agent's) keeps one connection per thread for its requests,
        # saving the TLS handshake; a plugin's client makes two requests and opens one per request.
        self.keep_alive = keep_alive
        self._kept = threading.local()
        token = token.strip()
        self._token = token
        self._token_file = Path(token_file) if token_file else None
        if token and not _TOKEN.match(token):
            raise KubernetesError(
                INVALID_NETWORK_CONFIG,
                f"the token in {credentials} has characters a bearer token cannot have (spaces, line "
                "breaks or non-ASCII): copy it again",
            )

    def __repr__(self) -> str:
        return f"ApiClient(server={self.server!r}, credentials={self.credentials!r})"

    def get_pod(self, namespace: str, name: str) -> dict[str, Any]:
        """GET /api/v1/namespaces/NS/pods/NAME; a missing Pod is code 3 (UNKNOWN_CONTAINER)."""
        return self._get_object("pods", "Pod", namespace, name, f"pod {namespace}/{name}")

    def get_secret(
        self,
        namespace: str,
        name: str,
        *,
        referenced_by: str = f"the pod annotation {CONFIG_SECRET_ANNOTATION}",
    ) -> dict[str, Any]:
        """GET /api/v1/namespaces/NS/secrets/NAME; a missing Secret is code 7, naming `referenced_by`."""
        return self._get_object("secrets", "Secret", namespace, name, referenced_by)

    # The node agent's requests besides (issue 12): Leases in its own namespace, Events on Pods,
    # and watching the Secrets its attachments use.
    def get_lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        """GET a coordination.k8s.io/v1 Lease; None if there is none."""
        try:
            return self._call("GET", "leases", "Lease", namespace, name)
        except KubernetesError as error:
            if error.status == 404:
                return None
            raise

    def create_lease(self, namespace: str, lease: Mapping[str, Any]) -> dict[str, Any]:
        """POST a Lease; one that exists already is KubernetesError with status 409 (AlreadyExists)."""
        name = str((lease.get("metadata") or {}).get("name", ""))
        return self._call("POST", "leases", "Lease", namespace, name, body=lease, collection=True)

    def update_lease(self, namespace: str, lease: Mapping[str, Any]) -> dict[str, Any]:
        """PUT a Lease read before (its metadata.resourceVersion): one changed meanwhile is status 409."""
        name = str((lease.get("metadata") or {}).get("name", ""))
        return self._call("PUT", "leases", "Lease", namespace, name, body=lease)

    def create_event(self, namespace: str, event: Mapping[str, Any]) -> dict[str, Any]:
        """POST a core/v1 Event (what `kubectl describe` lists under Events)."""
        name = str((event.get("metadata") or {}).get("name", ""))
        return self._call("POST", "events", "Event", namespace, name, body=event, collection=True)

    def patch_event(self, namespace: str, name: str, patch: Mapping[str, Any]) -> dict[str, Any]:
        """A strategic merge patch of an Event (its count, message and lastTimestamp), as client-go's
        event recorder sends it; a missing one is status 404."""
        return self._call(
            "PATCH", "events", "Event", namespace, name, body=patch, content_type=STRATEGIC_MERGE_PATCH
        )

    def watch_secret(
        self, namespace: str, name: str, resource_version: str = "", timeout_seconds: int = WATCH_SECONDS
    ) -> Watch:
        """Watch one Secret by name (a field selector: the agent never sees the namespace's other
        Secrets). Without `resource_version`, the API server first sends the Secret as it is (an
        ADDED event) if it exists; with one, what changed after it (a 410 if it is too old). The
        server ends the watch after `timeout_seconds`; iterate the Watch for its events."""
        _check_names("secrets", "Secret", namespace, name, "the watch")
        query = {
            "watch": "true",
            "fieldSelector": f"metadata.name={name}",
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(timeout_seconds),
        }
        if resource_version:
            query["resourceVersion"] = resource_version
        path = f"{self._api_path('secrets', namespace)}?{urlencode(query)}"
        return self._stream(path, "secrets", "Secret", namespace, name, timeout_seconds + WATCH_GRACE)

    # Requests.
    def _api_path(self, resource: str, namespace: str, name: str = "") -> str:
        group = API_GROUPS[resource]
        base = f"{self.prefix}/api/v1" if not group else f"{self.prefix}/apis/{group}"
        return f"{base}/namespaces/{quote(namespace)}/{resource}" + (f"/{quote(name)}" if name else "")

    def _get_object(self, resource: str, kind: str, namespace: str, name: str, origin: str) -> dict[str, Any]:
        return self._call("GET", resource, kind, namespace, name, origin=origin)

    def _call(
        self,
        method: str,
        resource: str,
        kind: str,
        namespace: str,
        name: str,
        *,
        body: Mapping[str, Any] | None = None,
        content_type: str = "application/json",
        collection: bool = False,
        origin: str = "",
    ) -> dict[str, Any]:
        """One request about object `name` (POST: to its collection); the object answered, or
        KubernetesError (with the HTTP status) saying what failed."""
        _check_names(resource, kind, namespace, name, origin or f"the {kind} to {VERBS[method]}")
        path = self._api_path(resource, namespace, "" if collection else name)
        data = json.dumps(body).encode() if body is not None else None
        status, reason, answer, headers = self._request(method, path, data, content_type)
        if 200 <= status < 300:
            obj = self._json(answer, path)
            if not isinstance(obj, dict) or obj.get("kind", kind) != kind:
                raise KubernetesError(
                    DECODING_FAILURE,
                    f"the API server {self.server} answered {method} {path} with something that is not "
                    f"a {kind}",
                )
            return obj
        raise self._status_error(
            status, reason, answer, headers, resource, kind, namespace, name, origin, VERBS[method], method
        )

    def _status_error(
        self,
        status: int,
        reason: str,
        body: bytes,
        headers: Mapping[str, str],
        resource: str,
        kind: str,
        namespace: str,
        name: str,
        origin: str,
        verb: str = "get",
        method: str = "GET",
    ) -> KubernetesError:
        detail = _status_object(body)
        said = self._redact(_clip(str(detail.get("message", "")))) if detail else ""
        why = str(detail.get("reason", "")) if detail else ""
        http = f"{status} {reason}".strip()
        said_part = f": {said}" if said and said != reason else ""
        target = f"{resource} {namespace}/{name}"
        action = f"{method} {target}"

        def error(code: int, message: str) -> KubernetesError:
            return KubernetesError(code, message, status, why)

        if status == 401:
            return error(
                INVALID_NETWORK_CONFIG,
                f"the API server {self.server} rejected {self.credentials} ({http}{said_part}): the token "
                "may have expired or been revoked, or the client certificate is not from the cluster's CA; "
                "write fresh credentials",
            )
        if status == 403:
            return error(
                INVALID_NETWORK_CONFIG,
                f"{_who(said)} ({self.credentials}) may not {verb} {resource} in namespace {namespace}: "
                f"add the RBAC rule ({RBAC_HINT}) that grants {verb} on {resource}; the API server said "
                f"{http}{said_part}",
            )
        if status == 404:
            if detail.get("reason") != "NotFound" or detail["details"].get("kind") != resource:
                return error(
                    INVALID_NETWORK_CONFIG,
                    f"{self.server} answered {action} with 404 but without a Kubernetes Status for it: "
                    f"is `server` in {self.origin} the API server's URL?",
                )
            if resource == "pods":
                return error(UNKNOWN_CONTAINER, f"pod {namespace}/{name} not found")
            if resource == "secrets":
                return error(
                    INVALID_NETWORK_CONFIG,
                    f"secret {name!r} not found in namespace {namespace} (named by {origin}): create it "
                    f"there, e.g. kubectl -n {namespace} create secret generic {name} "
                    "--from-file=config.json",
                )
            return error(INVALID_NETWORK_CONFIG, f"{kind} {namespace}/{name} not found")
        if status in (408, 409, 410, 429) or status >= 500:
            # 409: changed or created meanwhile (the caller reads again); 410: a watch too old.
            retry = headers.get("retry-after", "")
            retry_part = f", Retry-After {retry} s" if retry.isdigit() else ""
            return error(
                TRY_AGAIN_LATER,
                f"the API server {self.server} could not answer {action} ({http}{retry_part}{said_part}); "
                "try again later",
            )
        return error(
            INVALID_NETWORK_CONFIG,
            f"the API server {self.server} refused {action} ({http}{said_part})",
        )

    def _bearer(self) -> str:
        if self._token_file is not None:
            try:
                token = self._token_file.read_text(encoding="utf-8").strip()
            except (OSError, UnicodeDecodeError) as error:
                if self._token:
                    return self._token
                why = error.strerror if isinstance(error, OSError) else "not UTF-8 text"
                raise KubernetesError(
                    IO_FAILURE, f"cannot read the token file {self._token_file}: {why}"
                ) from None
            if not token or not _TOKEN.match(token):
                raise KubernetesError(
                    INVALID_NETWORK_CONFIG,
                    f"the token file {self._token_file} is empty or has characters a bearer token cannot "
                    "have",
                )
            return token
        return self._token

    def _credential(self) -> tuple[str, ssl.SSLContext, bool]:
        """(bearer token or "", TLS context, whether it presents a client certificate) to send with."""
        token = self._bearer()
        if token or self.credential_source is None:
            return token, self.ssl_context, self.client_certificate
        issued = self.credential_source.get()
        if issued.ssl_context is None:
            return issued.token, self.ssl_context, self.client_certificate
        return issued.token, issued.ssl_context, True

    def _request(
        self, method: str, path: str, data: bytes | None = None, content_type: str = "application/json"
    ) -> Answer:
        def exchange(headers: dict[str, str], context: ssl.SSLContext) -> Answer:
            return self._roundtrip(method, path, data, headers, context)

        token, context, with_certificate = self._credential()
        answer = self._send(exchange, token, context, with_certificate, content_type if data else "")
        if answer[0] == 401 and self.credential_source is not None:
            # Revoked or expired early: client-go asks the plugin for a new credential and retries, once.
            self.credential_source.expire(token)
            fresh = self._credential()
            if fresh[:2] != (token, context):
                token, context, with_certificate = fresh
                answer = self._send(exchange, token, context, with_certificate, content_type if data else "")
        return self._redacted(answer, token)

    def _redacted(self, answer: Answer, token: str) -> Answer:
        if not 200 <= answer[0] < 300 and self.credential_source is not None and len(token) >= 8:
            status, reason, body, headers = answer
            answer = status, reason, body.replace(token.encode(), b"<redacted>"), headers
        return answer

    def _send(
        self,
        exchange: Callable[[dict[str, str], ssl.SSLContext], T],
        token: str,
        context: ssl.SSLContext,
        with_certificate: bool,
        content_type: str = "",
    ) -> T:
        """`exchange` with our headers, retried once when the connection is closed under it; every
        failure to get an answer becomes a KubernetesError saying what to do."""
        headers = {"Accept": "application/json", "User-Agent": USER_AGENT}
        if content_type:
            headers["Content-Type"] = content_type
        if token:
            headers["Authorization"] = f"Bearer {token}"
        for attempt in (1, 2):
            try:
                return exchange(headers, context)
            except _RESETS as error:
                if attempt == 2:
                    hint = (
                        f"; if this persists, the server may be rejecting the client certificate in "
                        f"{self.credentials} (a TLS alert can be lost when the server closes at once)"
                        if with_certificate and isinstance(error, ssl.SSLError)
                        else ""
                    )
                    raise KubernetesError(
                        TRY_AGAIN_LATER,
                        f"the API server {self.server} closed the connection twice ({_why(error)}); "
                        f"try again later{hint}",
                    ) from None
            except _Timeout as error:
                if error.phase == "connect":
                    what = (
                        f"could not connect to the API server {self.server}{self._via()} within "
                        f"{self.connect_timeout:g} s"
                    )
                else:
                    what = f"the API server {self.server} did not answer within {self.read_timeout:g} s"
                raise KubernetesError(TRY_AGAIN_LATER, f"{what}; try again later") from None
            except ssl.SSLCertVerificationError as error:
                raise KubernetesError(
                    INVALID_NETWORK_CONFIG,
                    f"TLS verification of the API server {self.server} failed ({error.verify_message}): "
                    f"the certificate authority in {self.origin} does not match the server's "
                    "certificate, or `server` names another host",
                ) from None
            except ssl.SSLError as error:
                raise self._tls_error(error) from None
            except ValueError:  # a name ssl or http.client refuses; pre-checks make this rare
                raise KubernetesError(
                    INVALID_NETWORK_CONFIG,
                    f"cannot use the API server address {self.server} or its tls-server-name from "
                    f"{self.origin}",
                ) from None
            except ConnectionRefusedError:
                raise KubernetesError(
                    TRY_AGAIN_LATER,
                    f"cannot reach the API server {self.server}{self._via()} (connection refused); try again "
                    "later",
                ) from None
            except socket.gaierror as error:
                host = self.proxy.host if self.proxy else self.host
                raise KubernetesError(
                    TRY_AGAIN_LATER,
                    f"cannot resolve the {'proxy' if self.proxy else 'API server'} host {host} "
                    f"({error.strerror}); try again later",
                ) from None
            except OSError as error:
                raise self._connection_error(error) from None
            except http.client.HTTPException as error:
                raise KubernetesError(
                    TRY_AGAIN_LATER,
                    f"the API server {self.server} sent a malformed HTTP answer ({type(error).__name__}); "
                    "try again later",
                ) from None
        raise AssertionError("unreachable")

    def _connection(self, context: ssl.SSLContext) -> tuple[_TlsConnection, bool]:
        """(connection, whether it is connected already): this thread's kept one, else a new one."""
        if self.keep_alive:
            kept = getattr(self._kept, "connection", None)
            self._kept.connection = None
            if kept is not None and kept[1] is context and kept[0].sock is not None:
                return kept[0], True
            if kept is not None:
                kept[0].close()
        return self._new_connection(context), False

    def _new_connection(self, context: ssl.SSLContext) -> _TlsConnection:
        conn = _TlsConnection(
            (self.proxy.host, self.proxy.port) if self.proxy else (self.host, self.port),
            context,
            self.tls_server_name or self.host,
            self.connect_timeout,
        )
        if self.proxy:
            conn.set_tunnel(self.host, self.port, dict(self.proxy.headers))
        return conn

    def _connect(self, conn: _TlsConnection, read_timeout: float) -> None:
        try:
            conn.connect()
        except TimeoutError:
            raise _Timeout("connect") from None
        assert conn.sock is not None
        conn.sock.settimeout(read_timeout)

    def _roundtrip(
        self, method: str, path: str, data: bytes | None, headers: Mapping[str, str], context: ssl.SSLContext
    ) -> Answer:
        conn, connected = self._connection(context)
        keep = False
        try:
            if not connected:
                self._connect(conn, self.read_timeout)
            assert conn.sock is not None
            # The socket timeout bounds each recv only: a server trickling its answer a byte at a
            # time would hold the ADD as long as it liked. The whole answer gets read_timeout too.
            expired = threading.Event()
            deadline = _DEADLINES.add(time.monotonic() + self.read_timeout, conn.sock, expired)
            try:
                conn.request(method, path, body=data, headers=dict(headers))
                response = conn.getresponse()
                body = response.read(MAX_BODY + 1)
            except TimeoutError:
                raise _Timeout("read") from None
            except (OSError, http.client.HTTPException):
                if expired.is_set():
                    raise _Timeout("read") from None
                raise
            finally:
                _DEADLINES.remove(deadline)
            if expired.is_set():
                raise _Timeout("read")
            if len(body) > MAX_BODY:
                raise KubernetesError(
                    DECODING_FAILURE,
                    f"the API server {self.server} answered {method} {path} with over 16 MiB",
                )
            lowered = {k.lower(): v for k, v in response.getheaders()}
            keep = self.keep_alive and not response.will_close
            return response.status, response.reason, body, lowered
        finally:
            if keep:
                self._kept.connection = (conn, context)
            else:
                conn.close()

    def _stream(
        self, path: str, resource: str, kind: str, namespace: str, name: str, read_timeout: float
    ) -> Watch:
        """A watch request on a connection of its own; `read_timeout` bounds each wait for a line."""

        def exchange(headers: dict[str, str], context: ssl.SSLContext) -> Watch | Answer:
            conn = self._new_connection(context)
            try:
                self._connect(conn, read_timeout)
                conn.request("GET", path, headers=headers)
                response = conn.getresponse()
                if response.status == 200:
                    return Watch(conn, response, f"secret {namespace}/{name}", self.server)
                body = response.read(MAX_BODY + 1)
                lowered = {k.lower(): v for k, v in response.getheaders()}
                conn.close()
                return response.status, response.reason, body, lowered
            except TimeoutError:
                conn.close()
                raise _Timeout("read") from None
            except BaseException:
                conn.close()
                raise

        token, context, with_certificate = self._credential()
        answer = self._send(exchange, token, context, with_certificate)
        if isinstance(answer, Watch):
            return answer
        if answer[0] == 401 and self.credential_source is not None:
            self.credential_source.expire(token)  # the next watch asks the plugin again
        status, reason, body, headers = self._redacted(answer, token)
        raise self._status_error(
            status, reason, body, headers, resource, kind, namespace, name, "the watch", "watch", "GET"
        )

    def _via(self) -> str:
        return f" through the proxy http://{self.proxy.host}:{self.proxy.port}" if self.proxy else ""

    def _connection_error(self, error: OSError) -> KubernetesError:
        said = str(error)
        if self.proxy and said.startswith(_TUNNEL_FAILED):  # http.client's CONNECT got no 200
            answer = said.removeprefix(_TUNNEL_FAILED).strip()
            wants_credentials = answer.startswith("407")
            return KubernetesError(
                INVALID_NETWORK_CONFIG if wants_credentials else TRY_AGAIN_LATER,
                f"the proxy http://{self.proxy.host}:{self.proxy.port} did not open a tunnel to the API "
                f"server {self.server} ({_clip(answer, 100)})"
                + (
                    f": give proxy-url in {self.origin} the proxy's user and password"
                    if wants_credentials
                    else "; try again later"
                ),
            )
        return KubernetesError(
            TRY_AGAIN_LATER,
            f"cannot reach the API server {self.server}{self._via()} ({_why(error)}); try again later",
        )

    def _tls_error(self, error: ssl.SSLError) -> KubernetesError:
        reason = str(error.reason or "")
        if reason in _CLIENT_CERT_REJECTED:
            return KubernetesError(
                INVALID_NETWORK_CONFIG,
                f"the API server {self.server} rejected the client certificate in {self.credentials} "
                f"(TLS alert {reason}): it is not signed by the cluster's client CA, or it has expired",
            )
        if reason in ("WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "PACKET_LENGTH_TOO_LONG"):
            return KubernetesError(
                INVALID_NETWORK_CONFIG,
                f"{self.server} does not speak TLS ({reason}): is `server` in {self.origin} the API "
                "server's https URL and port?",
            )
        return KubernetesError(
            TRY_AGAIN_LATER,
            f"TLS with the API server {self.server} failed ({reason or 'SSL error'}); try again later",
        )

    def _json(self, body: bytes, path: str) -> Any:
        try:
            return json.loads(body)
        except (ValueError, RecursionError):  # not UTF-8, not JSON, too deep, a number too long
            raise KubernetesError(
                DECODING_FAILURE,
                f"the API server {self.server} answered GET {path} with something that is not JSON: is "
                f"`server` in {self.origin} the API server's URL?",
            ) from None

    def _redact(self, text: str) -> str:
        secrets = [self._token]
        if self._token_file is not None:
            with contextlib.suppress(OSError, UnicodeDecodeError):
                secrets.append(self._token_file.read_text(encoding="utf-8").strip())
        for secret in secrets:
            if len(secret) >= 8:
                text = text.replace(secret, "<redacted>")
        return text


def _cut(sock: socket.socket, expired: threading.Event) -> None:
    """End a read that took too long (the blocked recv sees end of file)."""
    expired.set()
    with contextlib.suppress(OSError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)  # the fd itself, not SSLSocket's unwrap


class _Deadlines:
    """One thread for every request's whole-answer deadline (a thread per request cost the node
    agent more than the request when twenty ADDs came at once): `_cut` what is still there when its
    time comes."""

    def __init__(self) -> None:
        self._entries: dict[int, tuple[float, socket.socket, threading.Event]] = {}
        self._next = 0
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None

    def add(self, when: float, sock: socket.socket, expired: threading.Event) -> int:
        with self._changed:
            self._next += 1
            self._entries[self._next] = (when, sock, expired)
            if self._thread is None or not self._thread.is_alive():  # none yet, or none since fork()
                self._thread = threading.Thread(target=self._run, name="pywg-k8s-deadlines", daemon=True)
                self._thread.start()
            self._changed.notify()
            return self._next

    def remove(self, key: int) -> None:
        with self._changed:
            self._entries.pop(key, None)

    def _run(self) -> None:
        with self._changed:
            while True:
                now = time.monotonic()
                for key, (when, sock, expired) in list(self._entries.items()):
                    if when <= now:
                        del self._entries[key]
                        _cut(sock, expired)
                soonest = min((when for when, _, _ in self._entries.values()), default=None)
                self._changed.wait(None if soonest is None else soonest - now)


_DEADLINES = _Deadlines()


class _Timeout(Exception):
    def __init__(self, phase: str) -> None:
        super().__init__(phase)
        self.phase = phase


class _TlsConnection(http.client.HTTPConnection):
    """HTTP over a TLS socket we wrap ourselves: our SNI/verification name, our connect timeout.

    `first_hop` is the API server, or the proxy when set_tunnel() names the API server.
    """

    default_port = 443

    def __init__(
        self, first_hop: tuple[str, int], context: ssl.SSLContext, server_hostname: str, timeout: float
    ) -> None:
        super().__init__(*first_hop, timeout=timeout)
        self._context = context
        self._server_hostname = server_hostname

    def connect(self) -> None:
        # TCP with TCP_NODELAY (without it, the request waits for the ACK of the TLS handshake's last
        # flight: 40 ms of delayed ACK per request against kube-apiserver), then the proxy's tunnel.
        super().connect()
        raw = self.sock
        try:
            self.sock = self._context.wrap_socket(raw, server_hostname=self._server_hostname)
        except BaseException:
            raw.close()
            raise


def _check_names(resource: str, kind: str, namespace: str, name: str, origin: str) -> None:
    for label, value in (("namespace", namespace), (f"{kind} name", name)):
        if not value or len(value) > 253 or not _NAME.match(value):
            raise KubernetesError(
                INVALID_NETWORK_CONFIG,
                f"{label} {value!r} (from {origin}) is not a valid Kubernetes name: lower-case letters, "
                "digits, '-' and '.'",
            )


class Watch:
    """The events of one watch request: iterating gives (type, object) as the API server sends them
    (ADDED, MODIFIED, DELETED, BOOKMARK); it ends when the server ends the watch. An ERROR event
    (410: the resourceVersion is too old) and a broken or silent connection are KubernetesError.
    `close`, from any thread, ends the iteration."""

    def __init__(
        self, conn: http.client.HTTPConnection, response: http.client.HTTPResponse, what: str, server: str
    ) -> None:
        self._conn, self._response = conn, response
        self._what, self._server = what, server
        self._closed = False

    def __iter__(self) -> Iterator[tuple[str, dict[str, Any]]]:
        try:
            while True:
                try:
                    line = self._response.readline(MAX_BODY + 1)
                except TimeoutError:
                    raise KubernetesError(
                        TRY_AGAIN_LATER, f"the watch of {self._what} on {self._server} went silent"
                    ) from None
                except (OSError, ValueError, http.client.HTTPException) as error:
                    if self._closed:
                        return
                    raise KubernetesError(
                        TRY_AGAIN_LATER,
                        f"the watch of {self._what} on {self._server} broke ({type(error).__name__})",
                    ) from None
                if not line or self._closed:
                    return
                yield self._event(line)
        finally:
            self._conn.close()

    def _event(self, line: bytes) -> tuple[str, dict[str, Any]]:
        try:
            event = json.loads(line) if len(line) <= MAX_BODY else None
        except (ValueError, RecursionError):
            event = None
        kind = event.get("type") if isinstance(event, dict) else None
        obj = event.get("object") if isinstance(event, dict) else None
        if not isinstance(kind, str) or not isinstance(obj, dict):
            raise KubernetesError(
                DECODING_FAILURE, f"the watch of {self._what} on {self._server} sent something not an event"
            )
        if kind == "ERROR":
            code = obj.get("code")
            raise KubernetesError(
                TRY_AGAIN_LATER,
                f"the watch of {self._what} on {self._server} ended: {_clip(str(obj.get('message', '')))}",
                code if isinstance(code, int) else 0,
                str(obj.get("reason", "")),
            )
        return kind, obj

    def close(self) -> None:
        self._closed = True
        sock = self._conn.sock
        if sock is not None:
            with contextlib.suppress(OSError):
                socket.socket.shutdown(sock, socket.SHUT_RDWR)


def _who(status_message: str) -> str:
    """The identity a 403 Status names: `User "system:serviceaccount:NS:NAME" cannot get ...`."""
    match = re.search(r'User "([^"]+)"', status_message)
    if match is None:
        return "the client"
    user = match.group(1)
    if user.startswith("system:serviceaccount:") and user.count(":") == 3:
        _, _, ns, name = user.split(":")
        return f"the service account {ns}/{name}"
    return f"user {user!r}"


def _why(error: OSError) -> str:
    if error.strerror:
        return error.strerror
    return type(error).__name__


def _clip(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _status_object(body: bytes) -> dict[str, Any]:
    try:
        obj = json.loads(body)
    except (ValueError, RecursionError):  # not UTF-8, not JSON, too deep, a number too long
        return {}
    if isinstance(obj, dict) and obj.get("kind") == "Status":
        details = obj.get("details")
        if not isinstance(details, dict):
            obj["details"] = {}
        return obj
    return {}


def _parse_server(server: str, where: str) -> tuple[str, int, str]:
    """(host, port, path prefix) of an https URL; host without IPv6 brackets."""
    text = server.strip()
    scheme, sep, rest = text.partition("://")
    if not sep:
        scheme, rest = "https", text
    if scheme.lower() != "https":
        raise KubernetesError(
            INVALID_NETWORK_CONFIG,
            f"the API server URL {server!r} (for {where}) is not an https:// URL; pywg-cni talks to the "
            "API server over TLS",
        )
    hostport, _, path = rest.partition("/")
    if "?" in path or "#" in path or "@" in hostport:
        raise KubernetesError(
            INVALID_NETWORK_CONFIG, f"the API server URL {server!r} (for {where}) is not a plain https URL"
        )
    if hostport.startswith("["):
        host, bracket, after = hostport[1:].partition("]")
        if not bracket or (after and not after.startswith(":")):
            raise KubernetesError(
                INVALID_NETWORK_CONFIG, f"the API server URL {server!r} (for {where}) has a broken [host]"
            )
        port_text = after[1:]
    elif hostport.count(":") > 1:
        raise KubernetesError(
            INVALID_NETWORK_CONFIG,
            f"the API server URL {server!r} (for {where}): put an IPv6 address in brackets",
        )
    else:
        host, _, port_text = hostport.partition(":")
    if not re.fullmatch(r"[A-Za-z0-9._:%-]+", host):
        raise KubernetesError(
            INVALID_NETWORK_CONFIG, f"the API server URL {server!r} (for {where}) has no usable host"
        )
    try:
        port = int(port_text) if port_text else 443
    except ValueError:
        port = 0
    if not 0 < port < 65536:
        raise KubernetesError(
            INVALID_NETWORK_CONFIG, f"the API server URL {server!r} (for {where}) has an invalid port"
        )
    prefix = "/" + path.strip("/") if path.strip("/") else ""
    return host, port, prefix


# --------------------------------------------------------------------------------------------
# Secrets.

_INI = re.compile(r"^[ \t]*\[Interface\][ \t]*$", re.MULTILINE)


def secret_config_text(secret: Mapping[str, Any], source_name: str) -> str:
    """The WireGuard config text in a Secret object (as the API returns it).

    The key is `config.json`; else the only key; else the one key whose value is a
    wg-quick INI (has an `[Interface]` section). Values come base64-decoded from `data`,
    or as-is from `stringData` (which wins, as on a write). `source_name` names the Secret
    in messages (e.g. "secret default/wireguard-config"); messages name keys, never values.
    """
    data = secret.get("data") or {}
    string_data = secret.get("stringData") or {}
    if not isinstance(data, dict) or not isinstance(string_data, dict):
        raise KubernetesError(DECODING_FAILURE, f"{source_name}: data and stringData must be maps")
    keys = sorted(set(data) | set(string_data))
    if not keys:
        raise KubernetesError(
            INVALID_NETWORK_CONFIG,
            f"{source_name} has no data: put the WireGuard config under the key config.json",
        )

    def value(key: str) -> str:
        if key in string_data:
            raw = string_data[key]
            if not isinstance(raw, str):
                raise KubernetesError(
                    DECODING_FAILURE, f"{source_name}: stringData key {key!r} is not a string"
                )
            return raw
        encoded = data[key]
        try:
            if not isinstance(encoded, str):
                raise ValueError
            decoded = base64.b64decode("".join(encoded.split()), validate=True)
        except (binascii.Error, ValueError):
            raise KubernetesError(
                DECODING_FAILURE, f"{source_name}: the value of key {key!r} is not valid base64"
            ) from None
        try:
            return decoded.decode("utf-8")
        except UnicodeDecodeError:
            raise KubernetesError(
                DECODING_FAILURE, f"{source_name}: the value of key {key!r} is not UTF-8 text"
            ) from None

    if "config.json" in keys:
        return value("config.json")
    if len(keys) == 1:
        return value(keys[0])
    ini_keys = []
    for key in keys:
        with contextlib.suppress(KubernetesError):
            if _INI.search(value(key)):
                ini_keys.append(key)
    if len(ini_keys) == 1:
        return value(ini_keys[0])
    listed = ", ".join(keys)
    if ini_keys:
        raise KubernetesError(
            INVALID_NETWORK_CONFIG,
            f"{source_name} has several WireGuard configs (keys {', '.join(ini_keys)}): keep one, or name it "
            "config.json",
        )
    raise KubernetesError(
        INVALID_NETWORK_CONFIG,
        f"{source_name} has no key config.json and no wg-quick [Interface] config among its keys "
        f"({listed}): put the WireGuard config under the key config.json",
    )
