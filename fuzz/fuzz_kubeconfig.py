#!/usr/bin/env python3
"""Fuzz target: kubeconfigs as cni/kubeconfig.py reads them (PyYAML, then contexts and credentials).

An input is a kubeconfig file's bytes. It is written to an anonymous memory file (memfd) and read
with `load_kubeconfig`, which builds the TLS context and the client without connecting. The files
a kubeconfig names are served from memory: beside it, a CA certificate, a client certificate and
its key (ca.crt, client.crt, client.key, what relative names in the seeds point at); any other
name reads as missing, so the fuzzer cannot make the harness read /dev/zero. Nothing is written to
disk: libFuzzer ends the process without running Python's atexit handlers, so a temporary directory
would outlive every run. (A token file is only read to make a request, which the harness never makes.)
The system CA store is replaced by an empty context, which makes no difference to parsing and
saves its load time.
Exec credential plugins are set up but never run: that happens at the first request.

Only `KubernetesError` may come out, and neither it nor the client's repr quotes the token or
PEM data.
"""

from __future__ import annotations

import datetime
import os
import ssl
from pathlib import Path

import atheris
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

with atheris.instrument_imports(include=["cni", "_common"]):
    from _common import fuzz

    from cni import k8s, kubeconfig

TOKEN = "fuzz-bearer-token.c2lnbmF0dXJl"
# "-----BEGIN" in base64, however the PEM goes on: the start of every *-data value.
PEM_BASE64 = "LS0tLS1CRUdJTi"
# Each input goes into this memory file; the files beside it, by name, are BESIDE (setup() fills it).
KUBECONFIG = Path(f"/proc/self/fd/{os.memfd_create('kubeconfig')}")
BESIDE: dict[str, bytes] = {}
NOWHERE = Path("/nonexistent-pywg-fuzz")  # a directory that does not exist


def self_signed() -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fuzz")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    pem_key = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM), pem_key


def _read_beside(path: Path, what: str) -> bytes:
    """kubeconfig._read_file serving the files of BESIDE; any other path reads as missing."""
    path = Path(os.path.normpath(os.path.abspath(path)))
    if path.parent == KUBECONFIG.parent and path.name in BESIDE:
        return BESIDE[path.name]
    return READ_FILE(NOWHERE / str(path).lstrip("/"), what)  # kubeconfig's own "cannot read" error


def setup() -> None:
    cert, key = self_signed()
    BESIDE.update({"ca.crt": cert, "client.crt": cert, "client.key": key})
    kubeconfig._read_file = _read_beside
    ssl.create_default_context = lambda *args, **kwargs: ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)


def check_quiet(text: str) -> None:
    assert TOKEN not in text and PEM_BASE64 not in text, f"credentials in: {text}"


def test_one_input(data: bytes) -> None:
    KUBECONFIG.write_bytes(data)  # truncates the memory file first
    try:
        check_quiet(repr(kubeconfig.load_kubeconfig(KUBECONFIG)))
    except k8s.KubernetesError as error:
        check_quiet(error.message)


READ_FILE = kubeconfig._read_file

if __name__ == "__main__":
    setup()
    fuzz(test_one_input)
