"""A real Kubernetes API server for tests: kube-apiserver v1.20.2 on etcd, on loopback (shared/k8s).

`start_real_kubernetes(workdir)` runs the shared material's up.sh with a private state directory
(KUBE_REAL_RUN under `workdir`) and down.sh when the context ends, so every test module gets a fresh,
empty cluster of its own: static-token users `admin` (system:masters) and `pywg-cni` (no rights),
RBAC, TokenRequest, the NetworkAttachmentDefinition CRD. Nothing reconciles what is stored (no
controllers, no kubelet), so a DaemonSet makes no Pod and a deleted namespace stays Terminating.

The shared material is `shared/k8s` beside the checkout ($PYWG_SHARED_K8S overrides it). Without it
`require` skips the test saying why, except in CI (CI=true), where it fails.

kubectl is Debian's kubernetes-client 1.20 (the server's version: kubectl supports one minor version
of skew), unpacked by scripts/install-deps.sh into the test cache ($PYWG_KUBECTL overrides it).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import ssl
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import pytest
import yaml

from tests.support.topology import OWNER, OWNER_ENV

SHARED_K8S_ENV = "PYWG_SHARED_K8S"
CHECKOUT = Path(__file__).resolve().parents[2]
# Where scripts/install-deps.sh and the end-to-end tests keep what they unpack or build.
E2E_CACHE = Path(os.environ.get("PYWG_E2E_CACHE", "/var/cache/pywg-e2e"))
KUBECTL_ENV = "PYWG_KUBECTL"
KUBECTL = E2E_CACHE / "kubernetes-client" / "usr" / "bin" / "kubectl"
SERVICE_ACCOUNT_PATH = Path("/var/run/secrets/kubernetes.io/serviceaccount")


def shared_k8s_dir() -> Path:
    override = os.environ.get(SHARED_K8S_ENV)
    return Path(override) if override else CHECKOUT.parent / "shared" / "k8s"


def unavailable(reason: str) -> NoReturn:
    """Skip, saying why; in CI (CI=true) fail instead: there everything must be present."""
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


def require_shared(*names: str) -> Path:
    """shared/k8s, with `names` in it (skip or fail when they are missing)."""
    shared = shared_k8s_dir()
    missing = [name for name in ("up.sh", *names) if not (shared / name).is_file()]
    if missing:
        unavailable(
            f"no {', '.join(missing)} in {shared} (put the shared folder beside the checkout, or set "
            f"{SHARED_K8S_ENV})"
        )
    return shared


def kubectl_path() -> Path:
    path = Path(os.environ.get(KUBECTL_ENV) or KUBECTL)
    if not os.access(path, os.X_OK):
        unavailable(
            f"no kubectl 1.20 at {path}: scripts/install-deps.sh test unpacks Debian's kubernetes-client"
        )
    return path


class ApiError(Exception):
    """An API answer other than 2xx: `status` and the Status object (or {})."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(f"{status}: {body.get('message', body)}")
        self.status = status
        self.body = body


@dataclass
class RealKubernetes:
    server: str
    ca: Path
    admin_kubeconfig: Path
    pywg_kubeconfig: Path
    admin_token: str
    workdir: Path

    @property
    def port(self) -> int:
        return int(self.server.rsplit(":", 1)[1])

    def request(
        self, method: str, path: str, body: dict[str, Any] | None = None, token: str | None = None
    ) -> dict[str, Any]:
        """One API request with `token` (admin's by default); ApiError for anything but 2xx."""
        request = urllib.request.Request(
            self.server + path,
            data=json.dumps(body).encode() if body is not None else None,
            method=method,
            headers={
                "Authorization": f"Bearer {token or self.admin_token}",
                "Content-Type": "application/merge-patch+json" if method == "PATCH" else "application/json",
            },
        )
        context = ssl.create_default_context(cafile=str(self.ca))
        try:
            with urllib.request.urlopen(request, context=context, timeout=30) as answer:
                return json.loads(answer.read())
        except urllib.error.HTTPError as error:
            try:
                status = json.loads(error.read())
            except ValueError:
                status = {}
            raise ApiError(error.code, status) from None

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """An admin request: what kubectl would do to set up the objects a test reads."""
        return self.request(method, path, body)

    def namespace(self) -> str:
        """A fresh namespace (a deleted one would stay Terminating: nothing here finalizes it)."""
        name = f"t-{uuid.uuid4().hex[:10]}"
        self.call(
            "POST",
            "/api/v1/namespaces",
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}},
        )
        return name

    def kubectl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """kubectl 1.20 as admin; AssertionError with its output when it fails and `check`."""
        done = subprocess.run(
            [str(kubectl_path()), "--kubeconfig", str(self.admin_kubeconfig), *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if check:
            assert done.returncode == 0, (
                f"kubectl {' '.join(args)}: {done.returncode}\n{done.stdout}{done.stderr}"
            )
        return done

    def token_for(self, namespace: str, account: str, seconds: int = 3600) -> str:
        """A token for ServiceAccount namespace/account from the TokenRequest API, as a kubelet gets one."""
        review = self.call(
            "POST",
            f"/api/v1/namespaces/{namespace}/serviceaccounts/{account}/token",
            {
                "apiVersion": "authentication.k8s.io/v1",
                "kind": "TokenRequest",
                "spec": {"expirationSeconds": seconds},
            },
        )
        return str(review["status"]["token"])

    def service_account_files(self, directory: Path, namespace: str, account: str) -> Path:
        """What the kubelet projects at SERVICE_ACCOUNT_PATH: token, ca.crt, namespace (0600 token)."""
        directory.mkdir(mode=0o755, parents=True, exist_ok=True)
        token = directory / "token"
        fd = os.open(token, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(self.token_for(namespace, account))
        shutil.copy(self.ca, directory / "ca.crt")
        (directory / "namespace").write_text(namespace)
        return directory

    def write_kubeconfig(self, path: Path, token: str, server: str = "") -> Path:
        """A kubeconfig (0600) for this server, or `server`, with `token`, as kubectl writes one."""
        doc = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "real",
                    "cluster": {
                        "server": server or self.server,
                        "certificate-authority-data": base64.b64encode(self.ca.read_bytes()).decode(),
                    },
                }
            ],
            "users": [{"name": "user", "user": {"token": token}}],
            "contexts": [{"name": "user@real", "context": {"cluster": "real", "user": "user"}}],
            "current-context": "user@real",
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as f:
            yaml.safe_dump(doc, f, default_flow_style=False)
        return path

    def can_i(self, user: str, verb: str, resource: str, namespace: str = "", group: str = "") -> bool:
        """What RBAC answers for `user` (a SubjectAccessReview, as `kubectl auth can-i --as`)."""
        attributes: dict[str, Any] = {"verb": verb, "resource": resource, "group": group}
        if namespace:
            attributes["namespace"] = namespace
        review = self.call(
            "POST",
            "/apis/authorization.k8s.io/v1/subjectaccessreviews",
            {
                "apiVersion": "authorization.k8s.io/v1",
                "kind": "SubjectAccessReview",
                "spec": {"user": user, "groups": _groups(user), "resourceAttributes": attributes},
            },
        )
        return bool(review["status"].get("allowed"))

    def wait_for_rbac(
        self, user: str, verb: str, resource: str, namespace: str, allowed: bool, timeout: float = 30.0
    ) -> None:
        """Until the authorizer, which learns of RBAC changes through its own watch, answers `allowed`."""
        deadline = time.monotonic() + timeout
        while self.can_i(user, verb, resource, namespace) != allowed:
            assert time.monotonic() < deadline, f"RBAC still says {not allowed} for {user} {verb} {resource}"
            time.sleep(0.05)


def _groups(user: str) -> list[str]:
    """The groups the authenticator gives a ServiceAccount token's user."""
    if user.startswith("system:serviceaccount:"):
        namespace = user.split(":")[2]
        return ["system:serviceaccounts", f"system:serviceaccounts:{namespace}", "system:authenticated"]
    return ["system:authenticated"]


@contextmanager
def start_real_kubernetes(workdir: Path) -> Iterator[RealKubernetes]:
    """A fresh API server whose state lives in `workdir`/run; stopped and removed when the context ends."""
    shared = require_shared()
    # The owner tag: if this process dies, the next session's sweep (tests/support/topology.py) stops etcd and
    # kube-apiserver, which up.sh starts in sessions of their own.
    env = {**os.environ, "KUBE_REAL_RUN": str(workdir / "run"), OWNER_ENV: OWNER}
    if os.access(Path(os.environ.get(KUBECTL_ENV) or KUBECTL), os.X_OK):
        env["KUBECTL"] = str(Path(os.environ.get(KUBECTL_ENV) or KUBECTL))
    try:
        started = subprocess.run(
            ["bash", str(shared / "up.sh")], env=env, capture_output=True, text=True, timeout=300, check=False
        )
        if started.returncode != 0:
            pytest.fail(f"{shared}/up.sh failed ({started.returncode}):\n{started.stderr[-3000:]}")
        values = dict(
            line.split("=", 1) for line in (workdir / "run" / "env").read_text().splitlines() if "=" in line
        )
        yield RealKubernetes(
            server=values["KUBE_REAL_SERVER"],
            ca=Path(values["KUBE_REAL_CA"]),
            admin_kubeconfig=Path(values["KUBE_REAL_ADMIN_KUBECONFIG"]),
            pywg_kubeconfig=Path(values["KUBE_REAL_PYWG_KUBECONFIG"]),
            admin_token=values["KUBE_REAL_ADMIN_TOKEN"],
            workdir=workdir,
        )
    finally:
        subprocess.run(
            ["bash", str(shared / "down.sh")], env=env, capture_output=True, timeout=120, check=False
        )
        shutil.rmtree(workdir, ignore_errors=True)


def apply(real: RealKubernetes, paths: Sequence[Path], *extra: str) -> str:
    """kubectl apply -f each path (with `extra` flags, e.g. --dry-run=server); its output."""
    args = ["apply", *extra]
    for path in paths:
        args += ["-f", str(path)]
    return real.kubectl(*args).stdout


@pytest.fixture(scope="module")
def real_k8s(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealKubernetes]:
    """A fresh real API server for the module that asks for it."""
    with start_real_kubernetes(tmp_path_factory.mktemp("kube-real")) as real:
        yield real
