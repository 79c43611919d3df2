"""The real kube-apiserver (tests/test_k8s_real.py's fixture) set up as a cluster with the node agent's
identity, and reachable from the network namespaces that play nodes.

`install_agent_identity` applies deploy/rbac.yaml and the ServiceAccount kube-system/pywg-cni of
deploy/daemonset.yaml (through the API, as `kubectl apply` would), then writes a kubeconfig with a
token for that ServiceAccount from the TokenRequest API: the agent's credentials in the DaemonSet.
`ApiBridge` makes the API server, which listens on the root namespace's loopback, answer on
127.0.0.1:<same port> inside a test host: a listening socket made inside the host's namespace,
forwarded from this process to the real one (so its certificate, for 127.0.0.1, fits). `restart_apiserver`
stops kube-apiserver and starts it again with the same command line: same port, certificates and etcd.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import threading
import urllib.error
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from pywg.runtime.netns import in_netns
from tests.support.topology import NETNS_DIR, Host, wait_until
from tests.test_k8s_real import RealKubernetes

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
AGENT_NAMESPACE, AGENT_ACCOUNT = "kube-system", "pywg-cni"
AGENT_USER = f"system:serviceaccount:{AGENT_NAMESPACE}:{AGENT_ACCOUNT}"

_ENDPOINTS = {
    "ClusterRole": "/apis/rbac.authorization.k8s.io/v1/clusterroles",
    "ClusterRoleBinding": "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
    "Role": "/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/roles",
    "RoleBinding": "/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings",
    "ServiceAccount": "/api/v1/namespaces/{ns}/serviceaccounts",
}


def create(real: RealKubernetes, doc: dict[str, Any]) -> None:
    """POST `doc` as the admin; one that exists already is replaced (PUT), as kubectl apply does."""
    path = _ENDPOINTS[doc["kind"]].format(ns=doc["metadata"].get("namespace", ""))
    try:
        real.call("POST", path, doc)
    except urllib.error.HTTPError as error:
        if error.code != 409:
            raise
        current = real.call("GET", f"{path}/{doc['metadata']['name']}")
        doc = {
            **doc,
            "metadata": {**doc["metadata"], "resourceVersion": current["metadata"]["resourceVersion"]},
        }
        real.call("PUT", f"{path}/{doc['metadata']['name']}", doc)


def install_agent_identity(real: RealKubernetes, directory: Path) -> Path:
    """deploy/rbac.yaml and the agent's ServiceAccount in the cluster; the kubeconfig of that
    ServiceAccount (a TokenRequest token in a tokenFile, as the kubelet projects it) in `directory`."""
    for doc in yaml.safe_load_all((DEPLOY / "rbac.yaml").read_text()):
        create(real, doc)
    account = next(
        d
        for d in yaml.safe_load_all((DEPLOY / "daemonset.yaml").read_text())
        if d["kind"] == "ServiceAccount"
    )
    create(real, account)
    token = real.call(
        "POST",
        f"/api/v1/namespaces/{AGENT_NAMESPACE}/serviceaccounts/{AGENT_ACCOUNT}/token",
        {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"expirationSeconds": 7200},
        },
    )["status"]["token"]
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "token").write_text(token)
    (directory / "token").chmod(0o600)
    cluster = yaml.safe_load(real.admin_kubeconfig.read_text())["clusters"][0]["cluster"]
    kubeconfig = directory / "agent.kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "real", "cluster": cluster}],
                "users": [{"name": "agent", "user": {"tokenFile": str(directory / "token")}}],
                "contexts": [
                    {
                        "name": "agent",
                        "context": {"cluster": "real", "user": "agent", "namespace": AGENT_NAMESPACE},
                    }
                ],
                "current-context": "agent",
            }
        )
    )
    kubeconfig.chmod(0o600)
    wait_until(
        lambda: allowed(real, "create", "leases", AGENT_NAMESPACE, "coordination.k8s.io"), 30.0, "RBAC"
    )
    return kubeconfig


def allowed(real: RealKubernetes, verb: str, resource: str, namespace: str = "", group: str = "") -> bool:
    """What the API server's authorizer says the agent's ServiceAccount may do (a SubjectAccessReview)."""
    attributes: dict[str, Any] = {"verb": verb, "resource": resource, "group": group}
    if namespace:
        attributes["namespace"] = namespace
    review = real.call(
        "POST",
        "/apis/authorization.k8s.io/v1/subjectaccessreviews",
        {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SubjectAccessReview",
            "spec": {
                "user": AGENT_USER,
                "groups": [
                    "system:serviceaccounts",
                    f"system:serviceaccounts:{AGENT_NAMESPACE}",
                    "system:authenticated",
                ],
                "resourceAttributes": attributes,
            },
        },
    )
    return bool(review["status"].get("allowed"))


def events(real: RealKubernetes, namespace: str, reason: str = "") -> list[dict[str, Any]]:
    """The Events in `namespace` (of `reason`), as kubectl get events lists them."""
    found = real.call("GET", f"/api/v1/namespaces/{namespace}/events")["items"]
    return [e for e in found if not reason or e.get("reason") == reason]


def wait_for_event(
    real: RealKubernetes,
    namespace: str,
    reason: str,
    timeout: float,
    where: Callable[[dict[str, Any]], bool] = lambda e: True,
) -> dict[str, Any]:
    found: list[dict[str, Any]] = []

    def seen() -> bool:
        found[:] = [e for e in events(real, namespace, reason) if where(e)]
        return bool(found)

    wait_until(seen, timeout, f"an Event {reason} in {namespace}")
    return found[0]


# --- the API server from inside a test host ------------------------------------------------------


class ApiBridge:
    """127.0.0.1:`port` inside `host` forwarded to 127.0.0.1:`port` here, until the host closes."""

    def __init__(self, host: Host, port: int) -> None:
        self.port = port
        with in_netns(str(NETNS_DIR / host.name)):
            self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", port))
        self.listener.listen(64)
        self.closed = threading.Event()
        self.sockets: list[socket.socket] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()
        host.on_close(self.close)

    def _accept(self) -> None:
        while not self.closed.is_set():
            try:
                inside, _ = self.listener.accept()
            except OSError:
                return
            try:
                outside = socket.create_connection(("127.0.0.1", self.port), timeout=5)
            except OSError:
                inside.close()  # the API server is down (a restart): the agent sees a reset
                continue
            outside.settimeout(None)
            with self.lock:
                self.sockets += [inside, outside]
            for source, sink in ((inside, outside), (outside, inside)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.closed.set()
        self.listener.close()
        with self.lock:
            for sock in self.sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()


def _gone(pid: int) -> bool:
    """Exited: no such process, or a zombie its reaper (up.sh's parent) has not reaped yet."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def restart_apiserver(real: RealKubernetes) -> None:
    """kube-apiserver stopped (SIGTERM, then SIGKILL after 5 s of draining) and started again on the
    same port, certificates and etcd; returns once it is ready. The pid file is updated for down.sh."""
    run = real.workdir / "run"
    pid_file = run / "kube-apiserver.pid"
    pid = int(pid_file.read_text())
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
    os.kill(pid, signal.SIGTERM)
    # It stops listening at once, then drains open watches for up to a minute: not waited for.
    with contextlib.suppress(AssertionError):
        wait_until(lambda: _gone(pid), 5.0, "kube-apiserver to stop")
    if not _gone(pid):
        os.kill(pid, signal.SIGKILL)
    wait_until(lambda: _gone(pid), 30.0, "kube-apiserver to stop")
    with open(run / "kube-apiserver.log", "ab") as log:
        process = subprocess.Popen(
            [a.decode() for a in argv],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
    pid_file.write_text(f"{process.pid}\n")

    def ready() -> bool:
        try:
            return real.call("GET", "/api/v1/namespaces/default")["kind"] == "Namespace"
        except (OSError, urllib.error.URLError, json.JSONDecodeError):
            return False

    wait_until(ready, 90.0, "kube-apiserver after its restart")
