"""What a Kubernetes API client costs the node agent: RSS and an ADD's reads, ours against the libraries.

Not a test: `python3 benchmarks/k8s_client.py [--rounds 50] [--clients pywg,lightkube,...]`; about two
minutes, plus the library installs the first time. docs/design.md ("Kubernetes API client") has the
figures and the decision they led to (issue 11).

It starts a private real kube-apiserver with shared/k8s/up.sh (beside the checkout, or
$PYWG_SHARED_K8S; its own state directory, stopped with down.sh at the end), creates a namespace with
a Pod and its Secret, and for each client runs a fresh process like the node agent: it imports
cni.agent (uvloop, pyroute2, pywg, the plugin) and runs a uvloop loop in its main thread, while the
ADD's reads (GET the Pod, then its Secret) run in a worker thread of a ThreadPoolExecutor, as
cni/agent.py runs cni/plugin.py. Async libraries run their coroutines on that loop
(run_coroutine_threadsafe from the worker), the shape they would need in the agent. Reported: the
process's VmRSS before the client is imported, after the import and after the first read; the import
time; p50/p95 of --rounds Pod + Secret reads with a new client each time (what the plugin does per
ADD) and with one kept client. The libraries are installed with pip into virtual environments under
--venvs (with the system's site-packages, so that the agent's own dependencies are there too).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
LIBRARIES = {
    "lightkube": "lightkube==1.0.1",
    "kr8s": "kr8s==0.20.15",
    "kubernetes": "kubernetes==37.0.3",
    "kubernetes_asyncio": "kubernetes_asyncio==36.1.0",
}
CLIENTS = ("pywg", *LIBRARIES)


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# --- the measured process -------------------------------------------------------------------------


def rss_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


def measure(client: str, kubeconfig: str, namespace: str, rounds: int) -> dict[str, Any]:
    """In the child: the figures for one client (see the module doc)."""
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    import uvloop

    import cni.agent  # noqa: F401  (the agent's imports: what the client comes on top of)

    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    pool = ThreadPoolExecutor(max_workers=4)

    def in_worker(fn: Any) -> Any:
        return loop.run_until_complete(loop.run_in_executor(pool, fn))

    in_worker(lambda: None)  # the worker thread exists before the baseline
    base = rss_kib()
    start = time.perf_counter()
    if client == "pywg":
        from cni.kubeconfig import load_kubeconfig

        def new() -> Any:
            return load_kubeconfig(kubeconfig)

        def read(c: Any) -> None:
            c.get_pod(namespace, "p")
            c.get_secret(namespace, "wg")

    elif client == "lightkube":
        from lightkube import Client, KubeConfig
        from lightkube.resources.core_v1 import Pod, Secret

        def new() -> Any:
            return Client(KubeConfig.from_file(kubeconfig))

        def read(c: Any) -> None:
            c.get(Pod, "p", namespace=namespace)
            c.get(Secret, "wg", namespace=namespace)

    elif client == "kubernetes":
        from kubernetes import client as kubernetes_client
        from kubernetes import config as kubernetes_config

        def new() -> Any:
            return kubernetes_client.CoreV1Api(kubernetes_config.new_client_from_config(kubeconfig))

        def read(c: Any) -> None:
            c.read_namespaced_pod("p", namespace)
            c.read_namespaced_secret("wg", namespace)

    elif client == "kr8s":
        import kr8s.asyncio
        from kr8s.asyncio.objects import Pod as Kr8sPod
        from kr8s.asyncio.objects import Secret as Kr8sSecret

        async def anew() -> Any:
            return await kr8s.asyncio.api(kubeconfig=kubeconfig)

        async def aread(api: Any) -> None:
            await Kr8sPod.get("p", namespace=namespace, api=api)
            await Kr8sSecret.get("wg", namespace=namespace, api=api)

    elif client == "kubernetes_asyncio":
        from kubernetes_asyncio import client as async_client
        from kubernetes_asyncio import config as async_config

        async def anew() -> Any:
            return async_client.CoreV1Api(await async_config.new_client_from_config(kubeconfig))

        async def aread(c: Any) -> None:
            await c.read_namespaced_pod("p", namespace)
            await c.read_namespaced_secret("wg", namespace)

    else:
        raise SystemExit(f"unknown client {client!r}; one of {', '.join(CLIENTS)}")
    import_s = time.perf_counter() - start
    imported = rss_kib()

    if client in ("pywg", "lightkube", "kubernetes"):
        kept = in_worker(new)

        def with_new() -> None:
            read(new())

        def with_kept() -> None:
            read(kept)

    else:

        def on_loop(coroutine: Any) -> Any:
            return asyncio.run_coroutine_threadsafe(coroutine, loop).result()

        kept = loop.run_until_complete(anew())

        async def anew_read() -> None:
            await aread(await anew())

        def with_new() -> None:
            on_loop(anew_read())

        def with_kept() -> None:
            on_loop(aread(kept))

    def timed(fn: Any) -> float:
        t = time.perf_counter()
        in_worker(fn)
        return (time.perf_counter() - t) * 1000

    first_ms = timed(with_new)
    first = rss_kib()
    new_ms = sorted(timed(with_new) for _ in range(rounds))
    kept_ms = sorted(timed(with_kept) for _ in range(rounds))
    return {
        "client": client,
        "agent_rss_kib": base,
        "import_s": round(import_s, 3),
        "rss_import_kib": imported - base,
        "rss_first_read_kib": first - base,
        "rss_end_kib": rss_kib() - base,
        "first_read_ms": round(first_ms, 1),
        "new_client_ms": {
            "p50": round(new_ms[len(new_ms) // 2], 2),
            "p95": round(new_ms[int(0.95 * (rounds - 1))], 2),
        },
        "kept_client_ms": {
            "p50": round(kept_ms[len(kept_ms) // 2], 2),
            "p95": round(kept_ms[int(0.95 * (rounds - 1))], 2),
        },
    }


# --- the run ----------------------------------------------------------------------------------------


def python_for(client: str, venvs: Path) -> str:
    if client == "pywg":
        return sys.executable
    venv = venvs / client
    python = venv / "bin" / "python"
    if not python.exists():
        say(f"installing {LIBRARIES[client]} into {venv} ...")
        subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
        pip = [
            str(python),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            LIBRARIES[client],
        ]
        subprocess.run(pip, check=True)
    return str(python)


def objects(env: dict[str, str]) -> str:
    """A namespace with Pod p (annotated) and Secret wg, made with the admin token; its name."""
    context = ssl.create_default_context(cafile=env["KUBE_REAL_CA"])
    namespace = f"bench-{os.getpid()}"

    def post(path: str, body: dict[str, Any]) -> None:
        request = urllib.request.Request(
            env["KUBE_REAL_SERVER"] + path,
            data=json.dumps(body).encode(),
            headers={
                "Authorization": f"Bearer {env['KUBE_REAL_ADMIN_TOKEN']}",
                "Content-Type": "application/json",
            },
        )
        urllib.request.urlopen(request, context=context, timeout=30).close()

    post("/api/v1/namespaces", {"metadata": {"name": namespace}})
    post(
        f"/api/v1/namespaces/{namespace}/secrets",
        {"metadata": {"name": "wg"}, "stringData": {"config.json": "{}"}},
    )
    post(
        f"/api/v1/namespaces/{namespace}/pods",
        {
            "metadata": {"name": "p", "annotations": {"wgcni.schu.io/configsecret": "wg"}},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]},
        },
    )
    return namespace


def main() -> int:
    parser = argparse.ArgumentParser(description="RSS and ADD-read latency of Kubernetes API clients.")
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--clients", default=",".join(CLIENTS))
    parser.add_argument("--venvs", type=Path, default=Path("/var/tmp/pywg-k8s-client-bench"))
    parser.add_argument(
        "--child", nargs=3, metavar=("CLIENT", "KUBECONFIG", "NAMESPACE"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(*args.child, rounds=args.rounds)))
        return 0
    shared = Path(os.environ.get("PYWG_SHARED_K8S", ROOT.parent / "shared" / "k8s"))
    if not (shared / "up.sh").is_file():
        say(f"k8s_client: {shared}/up.sh is missing: put shared/ beside the checkout or set PYWG_SHARED_K8S")
        return 1
    run = Path(tempfile.mkdtemp(prefix="pywg-k8s-client-bench-"))
    env = {**os.environ, "KUBE_REAL_RUN": str(run / "run")}
    try:
        say("starting kube-apiserver ...")
        subprocess.run(["bash", str(shared / "up.sh")], env=env, check=True, capture_output=True)
        values = dict(
            line.split("=", 1) for line in (run / "run" / "env").read_text().splitlines() if "=" in line
        )
        namespace = objects(values)
        results = []
        for client in args.clients.split(","):
            python = python_for(client, args.venvs)
            say(f"{client} ...")
            child = [python, __file__, "--rounds", str(args.rounds), "--child", client]
            child += [values["KUBE_REAL_ADMIN_KUBECONFIG"], namespace]
            answer = subprocess.run(
                child,
                env={**os.environ, "PYTHONPATH": str(ROOT)},
                check=True,
                capture_output=True,
                text=True,
            )
            results.append(json.loads(answer.stdout.strip().splitlines()[-1]))
        with open("/proc/loadavg") as loadavg:
            say(f"load average at the end: {loadavg.read().split()[:3]}")
        header = ("client", "import s", "RSS+ import", "RSS+ read", "new p50/p95 ms", "kept p50/p95 ms")
        print("{:<20} {:>8} {:>11} {:>9} {:>15} {:>16}".format(*header))
        for r in results:
            new, kept = r["new_client_ms"], r["kept_client_ms"]
            print(
                f"{r['client']:<20} {r['import_s']:>8.2f} {r['rss_import_kib'] / 1024:>9.1f}Mi"
                f" {r['rss_first_read_kib'] / 1024:>7.1f}Mi {new['p50']:>7.1f}/{new['p95']:<7.1f}"
                f" {kept['p50']:>7.1f}/{kept['p95']:<7.1f}"
            )
        print(json.dumps(results))
    finally:
        subprocess.run(["bash", str(shared / "down.sh")], env=env, capture_output=True, check=False)
        shutil.rmtree(run, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
