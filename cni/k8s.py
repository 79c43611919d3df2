"""A small Kubernetes API client: kubeconfig or in-cluster credentials, GET a Pod or a Secret.

Only the standard library: http.client over an ssl context we build ourselves, and a
strict parser for the YAML subset kubeconfigs are written in (block maps and lists,
scalars, quoted strings; a JSON document is accepted too).

Every failure is a `KubernetesError` whose `cni_code` is a CNI error code and whose
message tells an operator what to change; it ends up in `kubectl get events`. Messages
and reprs never carry a token, a key or Secret data.

Error codes:
  3  UNKNOWN_CONTAINER       the Pod is gone (404 on the Pod).
  4  INVALID_ENVIRONMENT     in_cluster() outside a pod (no KUBERNETES_SERVICE_HOST/PORT).
  5  IO_FAILURE              a kubeconfig, token, CA or certificate file cannot be read.
  6  DECODING_FAILURE        the kubeconfig is not YAML/JSON; an answer or a Secret value does not decode.
  7  INVALID_NETWORK_CONFIG  something an operator has to fix, so retrying does not help: the kubeconfig
                             is incomplete or uses an unsupported auth method; the API server rejects
                             the credentials (401) or RBAC forbids the read (403); the Secret is missing
                             or has no usable key; TLS verification fails (wrong CA, wrong name, client
                             certificate rejected); `server` is not an API server.
  11 TRY_AGAIN_LATER         transient: unreachable, refused, reset twice, timed out, 5xx, 429, 408.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import http.client
import json
import os
import re
import shutil
import socket
import ssl
import tempfile
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

from cni.spec import (
    DECODING_FAILURE,
    INVALID_ENVIRONMENT,
    INVALID_NETWORK_CONFIG,
    IO_FAILURE,
    TRY_AGAIN_LATER,
    UNKNOWN_CONTAINER,
)

__all__ = [
    "CONFIG_SECRET_ANNOTATION",
    "DEFAULT_TIMEOUT",
    "SERVICE_ACCOUNT_DIR",
    "ApiClient",
    "KubernetesError",
    "YamlError",
    "in_cluster",
    "load_kubeconfig",
    "parse_yaml",
    "secret_config_text",
]

DEFAULT_TIMEOUT = 5.0
SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
CONFIG_SECRET_ANNOTATION = "wgcni.schu.io/configsecret"
RBAC_HINT = "deploy/rbac.yaml"
MAX_BODY = 16 << 20  # a Secret is at most 1 MiB; a Pod with many annotations is still far below this
USER_AGENT = "pywg-cni"

# RFC 1123 subdomain: what the API server accepts as a namespace, Pod or Secret name.
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
_TOKEN = re.compile(r"^[\x21-\x7e]+$")  # printable ASCII, no spaces: safe in an Authorization header
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
    """A failed Kubernetes lookup; `cni_code` is the CNI error code for the runtime."""

    def __init__(self, cni_code: int, message: str) -> None:
        super().__init__(message)
        self.cni_code = cni_code
        self.message = message


# --------------------------------------------------------------------------------------------
# The YAML subset.


class YamlError(ValueError):
    """Names a line (1-based) and what is wrong there, never the text on it (it may be a token)."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"line {line}: {message}")
        self.line = line


_NULLS = ("", "~", "null", "Null", "NULL")
_INT = re.compile(r"^[-+]?[0-9]+$")
_FLOAT = re.compile(r"^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$")
_ESCAPES = {
    "0": "\0",
    "a": "\a",
    "b": "\b",
    "t": "\t",
    "\t": "\t",
    "n": "\n",
    "v": "\v",
    "f": "\f",
    "r": "\r",
    "e": "\x1b",
    " ": " ",
    '"': '"',
    "/": "/",
    "\\": "\\",
    "N": "\x85",
    "_": "\xa0",
    "L": "\u2028",
    "P": "\u2029",
}
_HEX_ESCAPES = {"x": 2, "u": 4, "U": 8}


def parse_yaml(text: str, *, typed: bool = True) -> Any:
    """One YAML document in the block style kubectl writes, or a JSON document.

    Supported: block mappings and sequences (a sequence may sit at its key's indentation),
    plain, single- and double-quoted scalars (also over several lines), `|` and `>` block
    scalars, comments, a leading `---`, and flow collections written as JSON (`{}`, `[]`).
    Anchors, aliases, tags, complex keys and several documents raise YamlError.
    With `typed=False` plain scalars stay text (except null), like sigs.k8s.io/yaml
    decoding into string fields; with `typed=True` they resolve as YAML 1.2 core.
    """
    if text.startswith("\ufeff"):
        text = text[1:]
    stripped = text.lstrip()
    if stripped.startswith(("{", "[")):
        try:
            return json.loads(text)
        except json.JSONDecodeError as error:
            raise YamlError(error.lineno, f"invalid JSON: {error.msg}") from None
        except (RecursionError, ValueError):  # too deep, or a number with more digits than int() takes
            raise YamlError(1, "invalid JSON: nested too deeply or a number too long") from None
    return _YamlParser(text, typed).document()


class _YamlParser:
    def __init__(self, text: str, typed: bool) -> None:
        self.lines = re.split(r"\r\n|\r|\n", text)
        self.typed = typed
        self.pos = 0
        self.end = len(self.lines)
        self.virtual: dict[int, tuple[int, str]] = {}  # a "- key: v" item re-read as its inner line
        self._find_document()

    # Lines.
    def _find_document(self) -> None:
        seen_content = False
        for i, line in enumerate(self.lines):
            if line.startswith("%") and not seen_content:
                if not line.startswith("%YAML"):
                    raise YamlError(i + 1, "YAML directives other than %YAML are not supported")
                self.pos = i + 1
                continue
            if line == "---" or line.startswith(("--- ", "---\t")):
                if seen_content:
                    raise YamlError(i + 1, "several YAML documents in one file are not supported")
                if line[3:].strip() and not line[3:].strip().startswith("#"):
                    raise YamlError(i + 1, "content after '---' on the same line is not supported")
                seen_content = True
                self.pos = i + 1
                continue
            if line == "..." or line.startswith(("... ", "...\t")):
                self.end = i
                for j in range(i + 1, len(self.lines)):
                    if not _blank_or_comment(self.lines[j]):
                        raise YamlError(j + 1, "several YAML documents in one file are not supported")
                return
            if not _blank_or_comment(line):
                seen_content = True

    def _line(self, i: int) -> tuple[int, str]:
        if i in self.virtual:
            return self.virtual[i]
        raw = self.lines[i]
        body = raw.lstrip(" ")
        indent = len(raw) - len(body)
        if body.startswith("\t") and body.strip():
            raise YamlError(i + 1, "a tab in the indentation (YAML indents with spaces)")
        return indent, body.rstrip(" \t")

    def peek(self) -> tuple[int, int, str] | None:
        """The next line with content: (index, indent, text without indentation)."""
        i = self.pos
        while i < self.end:
            if i in self.virtual or not _blank_or_comment(self.lines[i]):
                indent, body = self._line(i)
                return i, indent, body
            i += 1
        return None

    # Nodes.
    def document(self) -> Any:
        first = self.peek()
        if first is None:
            return None
        value = self.node(-1)
        rest = self.peek()
        if rest is not None:
            raise YamlError(rest[0] + 1, "unexpected indentation or content after the document")
        return value

    def node(self, parent: int) -> Any:
        p = self.peek()
        if p is None or p[1] <= parent:
            return None
        i, indent, body = p
        if _is_item(body):
            return self.sequence(indent)
        if self._key(body, i, probe=True) is not None:
            return self.mapping(indent)
        self.pos = i + 1
        return self.inline(body, parent, i)

    def mapping(self, indent: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        while (p := self.peek()) is not None and p[1] >= indent:
            i, at, body = p
            if at > indent:
                raise YamlError(i + 1, "unexpected indentation")
            if _is_item(body):
                raise YamlError(i + 1, "a list item where a key was expected")
            split = self._key(body, i, probe=False)
            if split is None:
                raise YamlError(i + 1, "expected 'key: value'")
            key, rest = split
            if key in out:
                raise YamlError(i + 1, f"duplicate key {key!r}")
            self.pos = i + 1
            if rest == "" or rest.startswith("#"):
                nxt = self.peek()
                if nxt is not None and nxt[1] == indent and _is_item(nxt[2]):
                    out[key] = self.sequence(indent)  # kubectl's style: the list sits at the key's column
                else:
                    out[key] = self.node(indent)
            else:
                out[key] = self.inline(rest, indent, i)
        return out

    def sequence(self, indent: int) -> list[Any]:
        out: list[Any] = []
        while (p := self.peek()) is not None and p[1] >= indent:
            i, at, body = p
            if at > indent:
                raise YamlError(i + 1, "unexpected indentation")
            if not _is_item(body):
                break
            after = body[1:]
            item = after.lstrip(" ")
            if item == "" or item.startswith("#"):
                self.pos = i + 1
                out.append(self.node(indent))
                continue
            inner = indent + 1 + len(after) - len(item)
            if _is_item(item) or self._key(item, i, probe=True) is not None:
                self.virtual[i] = (inner, item)
                self.pos = i
                out.append(self.sequence(inner) if _is_item(item) else self.mapping(inner))
            else:
                self.pos = i + 1
                out.append(self.inline(item, indent, i))
        return out

    def _key(self, body: str, i: int, *, probe: bool) -> tuple[str, str] | None:
        """(key, rest after the colon) if `body` is a `key: value` line, else None."""
        if body.startswith(("'", '"')):
            try:
                key, end = self._quoted_line(body, i)
            except YamlError:
                if probe:
                    return None
                raise
            rest = body[end:].lstrip(" ")
            if rest == ":" or rest.startswith((": ", ":\t")):
                return key, rest[1:].strip(" \t")
            return None
        match = re.search(r":(?:[ \t]|$)", body)
        if match is None or body[0] in "#[{&*!|>":
            return None
        key = body[: match.start()].rstrip(" \t")
        if not probe:
            if key == "" or key[0] in "?[]{},&*!|>%@`" or key == "<<":
                raise YamlError(i + 1, "complex keys, merge keys, anchors and tags are not supported")
            if " #" in key:
                raise YamlError(i + 1, "a comment inside a key")
        return key, body[match.end() :].strip(" \t")

    def inline(self, text: str, parent: int, i: int) -> Any:
        """A scalar or flow value that starts on line i after its key or dash."""
        head = text[0]
        if head in "|>":
            return self._block_scalar(text, parent, i)
        if head in "'\"":
            return self._quoted(text, parent, i)
        if head in "[{":
            return self._flow(text, i)
        if head in "&*!":
            raise YamlError(i + 1, "anchors, aliases and tags are not supported")
        if head in "@`%,?:" or (head == "-" and (len(text) == 1 or text[1] in " \t")):
            raise YamlError(i + 1, "a plain value cannot start with this character; quote it")
        return self._plain(text, parent, i)

    # Scalars.
    def _plain(self, text: str, parent: int, i: int) -> Any:
        value, commented = _strip_comment(text)
        _check_plain(value, i)
        parts = [value]
        j, blanks = self.pos, 0
        while not commented and j < self.end:
            raw = self.lines[j]
            if not raw.strip(" \t"):
                blanks += 1
                j += 1
                continue
            indent, body = self._line(j)
            if indent <= parent or body.startswith("#"):
                break
            body, commented = _strip_comment(body)
            _check_plain(body, j)
            parts.append("\n" * blanks if blanks else " ")
            parts.append(body)
            blanks = 0
            j += 1
            self.pos = j
        joined = "".join(parts)
        return _resolve(joined) if self.typed else (None if joined in _NULLS else joined)

    def _quoted_line(self, text: str, i: int) -> tuple[str, int]:
        """A quoted scalar that ends on this line: (value, index after the closing quote)."""
        scan = _QuotedScan(text[0], i)
        end = scan.feed(text, 1)
        if scan.state != "closed":
            raise YamlError(i + 1, "a quoted key must end on its line")
        return "".join(scan.pieces), end

    def _quoted(self, text: str, parent: int, i: int) -> str:
        start = i
        scan = _QuotedScan(text[0], i)
        line, end = text, scan.feed(text, 1)
        while scan.state != "closed":
            # The string goes on: fold the line break (YAML 1.2 §7.3).
            escaped_break = scan.state == "escaped-break"
            if not escaped_break:
                scan.strip_trailing_space()
            blanks = 0
            while True:
                if self.pos >= self.end:
                    raise YamlError(start + 1, "a quoted string is not closed")
                i = self.pos
                line = self.lines[i]
                self.pos += 1
                if line.strip(" \t"):
                    break
                blanks += 1
            if len(line) - len(line.lstrip(" ")) <= parent:
                raise YamlError(start + 1, "a quoted string is not closed")
            if blanks:
                scan.pieces.append("\n" * blanks)
            elif not escaped_break:
                scan.pieces.append(" ")
            line = line.lstrip(" \t")
            scan.line = i
            end = scan.feed(line, 0)
        rest = line[end:].strip(" \t")
        if rest and not rest.startswith("#"):
            raise YamlError(i + 1, "text after the closing quote")
        return "".join(scan.pieces)

    def _flow(self, text: str, i: int) -> Any:
        candidates = [text]
        if " #" in text:
            candidates.append(text[: text.index(" #")])
        for candidate in candidates:
            try:
                return json.loads(candidate)
            except (ValueError, RecursionError):  # not JSON, too deep, a number too long
                continue
        raise YamlError(i + 1, "flow collections must be written as JSON (or use block style)")

    def _block_scalar(self, header: str, parent: int, i: int) -> str:
        match = re.fullmatch(r"([|>])(?:([1-9])?([+-])?|([+-])([1-9]))(?:[ \t]+#.*)?", header)
        if match is None:
            raise YamlError(i + 1, "a block scalar header must be |, >, optionally with + or - and a digit")
        style = match.group(1)
        chomp = match.group(3) or match.group(4) or ""
        explicit = match.group(2) or match.group(5)
        block = max(parent, 0) + int(explicit) if explicit else None
        lines: list[str] = []
        j = self.pos
        while j < self.end:
            raw = self.lines[j]
            if not raw.strip(" "):
                lines.append("")
                j += 1
                continue
            indent = len(raw) - len(raw.lstrip(" "))
            if block is None:
                if indent <= parent:
                    break
                block = indent
            if indent < block:
                break
            lines.append(raw[block:])
            j += 1
        trailing = 0
        while lines and lines[-1] == "":
            lines.pop()
            trailing += 1
        self.pos = j - trailing
        body = "\n".join(lines) if style == "|" else _fold(lines)
        if not lines:
            return "\n" * trailing if chomp == "+" else ""
        if chomp == "-":
            return body
        if chomp == "+":
            return body + "\n" + "\n" * trailing
        return body + "\n"


def _blank_or_comment(line: str) -> bool:
    stripped = line.strip(" \t")
    return stripped == "" or stripped.startswith("#")


def _is_item(body: str) -> bool:
    return body == "-" or body.startswith(("- ", "-\t"))


def _strip_comment(text: str) -> tuple[str, bool]:
    match = re.search(r"[ \t]#", text)
    if match is None:
        return text.rstrip(" \t"), False
    return text[: match.start()].rstrip(" \t"), True


def _check_plain(value: str, i: int) -> None:
    if re.search(r":(?:[ \t]|$)", value):
        raise YamlError(i + 1, "': ' inside a plain value; quote the value")


class _QuotedScan:
    """Reads a single- or double-quoted scalar line by line into `pieces`."""

    def __init__(self, quote_char: str, line: int) -> None:
        self.quote = quote_char
        self.line = line
        self.pieces: list[str] = []
        self.protected = 0  # pieces[:protected] end with an escape: not trailing space to strip
        self.state = "open"  # "open", "escaped-break" (a backslash ended the line) or "closed"

    def feed(self, text: str, k: int) -> int:
        """Scans text[k:]; returns the index after the closing quote (or len(text))."""
        self.state = "open"
        while k < len(text):
            c = text[k]
            if c == self.quote:
                if self.quote == "'" and text[k + 1 : k + 2] == "'":
                    self.pieces.append("'")
                    k += 2
                    continue
                self.state = "closed"
                return k + 1
            if c == "\\" and self.quote == '"':
                if k + 1 == len(text):
                    self.state = "escaped-break"
                    return k + 1
                self.pieces.append(self._escape(text, k))
                self.protected = len(self.pieces)
                k += 2 + _HEX_ESCAPES.get(text[k + 1], 0)
                continue
            self.pieces.append(c)
            k += 1
        return k

    def _escape(self, text: str, k: int) -> str:
        e = text[k + 1]
        if e in _ESCAPES:
            return _ESCAPES[e]
        if e in _HEX_ESCAPES:
            width = _HEX_ESCAPES[e]
            digits = text[k + 2 : k + 2 + width]
            if len(digits) != width or not all(d in "0123456789abcdefABCDEF" for d in digits):
                raise YamlError(self.line + 1, f"a \\{e} escape needs {width} hex digits")
            return chr(int(digits, 16))
        raise YamlError(self.line + 1, "an unknown escape in a double-quoted string")

    def strip_trailing_space(self) -> None:
        while len(self.pieces) > self.protected and self.pieces[-1] in (" ", "\t"):
            self.pieces.pop()


def _fold(lines: list[str]) -> str:
    out = ""
    for n, line in enumerate(lines):
        if n == 0:
            out = line
        elif line == "" or line.startswith((" ", "\t")) or lines[n - 1].startswith((" ", "\t")):
            out += "\n" + line
        elif lines[n - 1] == "":
            out += line
        else:
            out += " " + line
    return out


def _resolve(value: str) -> Any:
    if value in _NULLS:
        return None
    if value in ("true", "True", "TRUE"):
        return True
    if value in ("false", "False", "FALSE"):
        return False
    if _INT.match(value):
        return int(value)
    if re.fullmatch(r"0x[0-9a-fA-F]+", value):
        return int(value, 16)
    if re.fullmatch(r"0o[0-7]+", value):
        return int(value[2:], 8)
    if _FLOAT.match(value):
        return float(value)
    if value in (".inf", ".Inf", ".INF", "+.inf", "+.Inf", "+.INF"):
        return float("inf")
    if value in ("-.inf", "-.Inf", "-.INF"):
        return float("-inf")
    if value in (".nan", ".NaN", ".NAN"):
        return float("nan")
    return value


# --------------------------------------------------------------------------------------------
# The client.


class ApiClient:
    """GETs objects from one API server with one set of credentials.

    The token file (if any) is read at every request, so a rotated ServiceAccount token
    is picked up; it wins over a literal token when both are set (as in client-go).
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
        connect_timeout: float = DEFAULT_TIMEOUT,
        read_timeout: float = DEFAULT_TIMEOUT,
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
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
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

    # Requests.
    def _get_object(self, resource: str, kind: str, namespace: str, name: str, origin: str) -> dict[str, Any]:
        for label, value in (("namespace", namespace), (f"{kind} name", name)):
            if not value or len(value) > 253 or not _NAME.match(value):
                raise KubernetesError(
                    INVALID_NETWORK_CONFIG,
                    f"{label} {value!r} (from {origin}) is not a valid Kubernetes name: lower-case letters, "
                    "digits, '-' and '.'",
                )
        path = f"{self.prefix}/api/v1/namespaces/{quote(namespace)}/{resource}/{quote(name)}"
        status, reason, body, headers = self._request(path)
        if status == 200:
            obj = self._json(body, path)
            if not isinstance(obj, dict) or obj.get("kind", kind) != kind:
                raise KubernetesError(
                    DECODING_FAILURE,
                    f"the API server {self.server} answered GET {path} with something that is not a {kind}",
                )
            return obj
        raise self._status_error(status, reason, body, headers, resource, kind, namespace, name, origin)

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
    ) -> KubernetesError:
        detail = _status_object(body)
        said = self._redact(_clip(str(detail.get("message", "")))) if detail else ""
        http = f"{status} {reason}".strip()
        said_part = f": {said}" if said and said != reason else ""
        target = f"{resource} {namespace}/{name}"
        if status == 401:
            return KubernetesError(
                INVALID_NETWORK_CONFIG,
                f"the API server {self.server} rejected {self.credentials} ({http}{said_part}): the token "
                "may have expired or been revoked, or the client certificate is not from the cluster's CA; "
                "write fresh credentials",
            )
        if status == 403:
            return KubernetesError(
                INVALID_NETWORK_CONFIG,
                f"{_who(said)} ({self.credentials}) may not get {resource} in namespace {namespace}: add "
                f"the RBAC rule ({RBAC_HINT}) that grants get on {resource}; the API server said "
                f"{http}{said_part}",
            )
        if status == 404:
            if detail.get("reason") != "NotFound" or detail["details"].get("kind") != resource:
                return KubernetesError(
                    INVALID_NETWORK_CONFIG,
                    f"{self.server} answered GET {target} with 404 but without a Kubernetes Status for it: "
                    f"is `server` in {self.origin} the API server's URL?",
                )
            if resource == "pods":
                return KubernetesError(UNKNOWN_CONTAINER, f"pod {namespace}/{name} not found")
            return KubernetesError(
                INVALID_NETWORK_CONFIG,
                f"secret {name!r} not found in namespace {namespace} (named by {origin}): create it there, "
                f"e.g. kubectl -n {namespace} create secret generic {name} --from-file=config.json",
            )
        if status in (408, 429) or status >= 500:
            retry = headers.get("retry-after", "")
            retry_part = f", Retry-After {retry} s" if retry.isdigit() else ""
            return KubernetesError(
                TRY_AGAIN_LATER,
                f"the API server {self.server} could not answer GET {target} "
                f"({http}{retry_part}{said_part}); try again later",
            )
        return KubernetesError(
            INVALID_NETWORK_CONFIG,
            f"the API server {self.server} refused GET {target} ({http}{said_part})",
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

    def _request(self, path: str) -> tuple[int, str, bytes, dict[str, str]]:
        headers = {"Accept": "application/json", "User-Agent": USER_AGENT}
        token = self._bearer()
        if token:
            headers["Authorization"] = f"Bearer {token}"
        for attempt in (1, 2):
            try:
                return self._roundtrip(path, headers)
            except _RESETS as error:
                if attempt == 2:
                    hint = (
                        f"; if this persists, the server may be rejecting the client certificate in "
                        f"{self.credentials} (a TLS alert can be lost when the server closes at once)"
                        if self.client_certificate and isinstance(error, ssl.SSLError)
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
                        f"could not connect to the API server {self.server} within {self.connect_timeout:g} s"
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
                    f"cannot reach the API server {self.server} (connection refused); try again later",
                ) from None
            except socket.gaierror as error:
                raise KubernetesError(
                    TRY_AGAIN_LATER,
                    f"cannot resolve the API server host {self.host} ({error.strerror}); try again later",
                ) from None
            except OSError as error:
                raise KubernetesError(
                    TRY_AGAIN_LATER,
                    f"cannot reach the API server {self.server} ({_why(error)}); try again later",
                ) from None
            except http.client.HTTPException as error:
                raise KubernetesError(
                    TRY_AGAIN_LATER,
                    f"the API server {self.server} sent a malformed HTTP answer ({type(error).__name__}); "
                    "try again later",
                ) from None
        raise AssertionError("unreachable")

    def _roundtrip(self, path: str, headers: Mapping[str, str]) -> tuple[int, str, bytes, dict[str, str]]:
        conn = _TlsConnection(
            self.host,
            self.port,
            self.ssl_context,
            self.tls_server_name or self.host,
            self.connect_timeout,
        )
        try:
            try:
                conn.connect()
            except TimeoutError:
                raise _Timeout("connect") from None
            assert conn.sock is not None
            conn.sock.settimeout(self.read_timeout)
            # The socket timeout bounds each recv only: a server trickling its answer a byte at a
            # time would hold the ADD as long as it liked. The whole answer gets read_timeout too.
            expired = threading.Event()
            timer = threading.Timer(self.read_timeout, _cut, (conn.sock, expired))
            timer.start()
            try:
                conn.request("GET", path, headers=dict(headers))
                response = conn.getresponse()
                body = response.read(MAX_BODY + 1)
            except TimeoutError:
                raise _Timeout("read") from None
            except (OSError, http.client.HTTPException):
                if expired.is_set():
                    raise _Timeout("read") from None
                raise
            finally:
                timer.cancel()
            if expired.is_set():
                raise _Timeout("read")
            if len(body) > MAX_BODY:
                raise KubernetesError(
                    DECODING_FAILURE, f"the API server {self.server} answered GET {path} with over 16 MiB"
                )
            lowered = {k.lower(): v for k, v in response.getheaders()}
            return response.status, response.reason, body, lowered
        finally:
            conn.close()

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
    """In a timer thread: end a read that took too long (the blocked recv sees end of file)."""
    expired.set()
    with contextlib.suppress(OSError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)  # the fd itself, not SSLSocket's unwrap


class _Timeout(Exception):
    def __init__(self, phase: str) -> None:
        super().__init__(phase)
        self.phase = phase


class _TlsConnection(http.client.HTTPConnection):
    """HTTP over a TLS socket we wrap ourselves: our SNI/verification name, our connect timeout."""

    default_port = 443

    def __init__(
        self, host: str, port: int, context: ssl.SSLContext, server_hostname: str, timeout: float
    ) -> None:
        super().__init__(host, port, timeout=timeout)
        self._context = context
        self._server_hostname = server_hostname

    def connect(self) -> None:
        raw = socket.create_connection((self.host, self.port), self.timeout)
        # Without it the request waits for the ACK of the TLS handshake's last flight: 40 ms of
        # delayed ACK per request against kube-apiserver, 100 ms for the two reads of an ADD.
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            self.sock = self._context.wrap_socket(raw, server_hostname=self._server_hostname)
        except BaseException:
            raw.close()
            raise


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
# Building clients.


def load_kubeconfig(
    path: str | os.PathLike[str],
    *,
    context: str | None = None,
    connect_timeout: float = DEFAULT_TIMEOUT,
    read_timeout: float = DEFAULT_TIMEOUT,
) -> ApiClient:
    """A client for the current context (or `context`) of the kubeconfig at `path`.

    Supports cluster `server`, `certificate-authority(-data)`, `insecure-skip-tls-verify`,
    `tls-server-name`; user `token`, `tokenFile`, `client-certificate(-data)` with
    `client-key(-data)`. Relative file names resolve against the kubeconfig's directory.
    exec/auth-provider plugins, basic auth, impersonation and proxy-url are refused.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise KubernetesError(IO_FAILURE, f"cannot read kubeconfig {path}: {error.strerror}") from None
    except UnicodeDecodeError:
        raise KubernetesError(DECODING_FAILURE, f"kubeconfig {path} is not UTF-8 text") from None
    try:
        doc = parse_yaml(text, typed=False)
    except YamlError as error:
        raise KubernetesError(
            DECODING_FAILURE, f"kubeconfig {path} is not in the YAML subset pywg-cni reads: {error}"
        ) from None
    return _Kubeconfig(doc, path).client(context, connect_timeout, read_timeout)


def in_cluster(
    service_account_dir: str | os.PathLike[str] = SERVICE_ACCOUNT_DIR,
    *,
    environ: Mapping[str, str] | None = None,
    connect_timeout: float = DEFAULT_TIMEOUT,
    read_timeout: float = DEFAULT_TIMEOUT,
) -> ApiClient:
    """A client for the pod's own ServiceAccount (KUBERNETES_SERVICE_HOST/PORT, token, ca.crt)."""
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
        context, client_certificate = self.tls_context(cluster, cluster_name, user, user_name)
        token = self.string(user, "token", f"user {user_name!r}")
        token_file = self.string(user, "tokenFile", f"user {user_name!r}")
        return ApiClient(
            self.string(cluster, "server", f"cluster {cluster_name!r}", required=True),
            context,
            token=token,
            token_file=self.resolve(token_file) if token_file else "",
            tls_server_name=self.string(cluster, "tls-server-name", f"cluster {cluster_name!r}"),
            namespace=self.string(ctx, "namespace", f"context {name!r}") or "default",
            credentials=f"the credentials in {where}",
            origin=f"kubeconfig {self.path}",
            client_certificate=client_certificate,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
        )

    def tls_context(
        self, cluster: dict[str, Any], cluster_name: str, user: dict[str, Any], user_name: str
    ) -> tuple[ssl.SSLContext, bool]:
        """The TLS context for this cluster and user, and whether it presents a client certificate."""
        c_where, u_where = f"cluster {cluster_name!r}", f"user {user_name!r}"
        if self.string(cluster, "proxy-url", c_where):
            self.fail(f"{c_where} sets proxy-url, which pywg-cni does not support")
        insecure = self.boolean(cluster, "insecure-skip-tls-verify", c_where)
        ca_data = self.string(cluster, "certificate-authority-data", c_where)
        ca_file = self.string(cluster, "certificate-authority", c_where)
        if insecure and (ca_data or ca_file):
            self.fail(
                f"{c_where} sets both a certificate authority and insecure-skip-tls-verify (kubectl refuses "
                "this too)"
            )
        if insecure:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        elif ca_data:
            pem = self.base64(ca_data, f"{c_where} certificate-authority-data")
            context = _verifying_context(pem, f"certificate-authority-data of {c_where} in {self.path}")
        elif ca_file:
            path = self.resolve(ca_file)
            context = _verifying_context(_read_file(path, "certificate-authority"), f"CA file {path}")
        else:
            context = ssl.create_default_context()
        cert_data = self.string(user, "client-certificate-data", u_where)
        key_data = self.string(user, "client-key-data", u_where)
        cert_file = self.string(user, "client-certificate", u_where)
        key_file = self.string(user, "client-key", u_where)
        has_cert, has_key = bool(cert_data or cert_file), bool(key_data or key_file)
        if has_cert != has_key:
            self.fail(f"{u_where} has a client certificate without its key, or a key without its certificate")
        if has_cert:
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
            _load_cert_chain(context, cert, key, f"the client certificate of {u_where} in {self.path}")
        return context, has_cert

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
        raise KubernetesError(IO_FAILURE, f"{where}: cannot stage it for TLS ({_why(error)})") from None


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
