"""A Kubernetes node's CNI path without a kubelet: a private containerd 1.6, crictl and Multus (shared/k8s).

`crictl runp` makes the CRI call a kubelet makes for a Pod sandbox: containerd's CRI plugin (Debian's
containerd 1.6.20 with runc) creates the sandbox's network namespace and runs the CNI config, Multus
4.3.0 (thin plugin), which reads the Pod and its NetworkAttachmentDefinitions from the API server,
runs the default network and then each network the Pod's annotation asks for, and writes the
network-status annotation back. `run_daemonset_pod` translates a DaemonSet's Pod template into CRI
configs (host network, privileged, hostPath volumes, mount propagation, resources, the ServiceAccount
volume and KUBERNETES_SERVICE_HOST/PORT a kubelet adds) and runs its init containers, then its
containers, as the kubelet would.

Everything of containerd's is under the run directory RUNS/<owner>: its config, root, state, gRPC and
ttrpc sockets, runc's root, the CNI conf_dir and bin_dir (Multus, Debian's loopback/macvlan/static
plugins, and what an init container installs), Multus's kubeconfig and cache, the logs. containerd
1.6 also uses paths of the machine it does not let configure: shim sockets in /run/containerd/s,
network namespaces /var/run/netns/cni-*, libcni's result cache /var/lib/cni/results, and the cgroup
parent (/pywg-e2e-<owner> in every hierarchy). `close` removes all of it (what this node made only),
also after a failed test; `sweep_dead_runs` does the same for runs whose pytest process died.

The default network is macvlan (Debian's plugin) on a veth whose other end is in a namespace of the
test, with a static address: Multus needs a default network, and containerd one that gives eth0 an
address. Multus reads with a ServiceAccount `kube-system/multus` bound to Multus's own ClusterRole
(multus-cni deployments/multus-daemonset.yml), not with the agent's credentials.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.k8s_cluster import E2E_CACHE, SERVICE_ACCOUNT_PATH, RealKubernetes, require_shared
from tests.support.kubelet import container_env, expanded
from tests.support.topology import OWNER, OWNER_ENV, Host, owner_alive, run, wait_until

RUNS = Path("/var/tmp/pywg-e2e")
BIN_CACHE = E2E_CACHE / "bin"
PAUSE_IMAGE = "localhost/pause:3.9"  # what shared/k8s/pause-image.oci.tar holds
CRICTL, MULTUS = "crictl-1.36.0-196", "multus-4.3.0"  # shared/k8s/NAME.xz
DEBIAN_PLUGINS = Path("/usr/lib/cni")  # containernetworking-plugins
SHIM_SOCKETS = Path("/run/containerd/s")
NETNS_DIR = Path("/var/run/netns")
CNI_CACHE = Path("/var/lib/cni/results")
CGROUPS = Path("/sys/fs/cgroup")
K8S_NAMESPACE = "k8s.io"  # containerd's namespace for CRI
DEFAULT_NETWORK = "e2e-default"
DEFAULT_ADDRESS = "192.0.2.2/24"  # TEST-NET-1, on every sandbox's eth0
MULTUS_RBAC = """\
apiVersion: v1
kind: ServiceAccount
metadata: {name: multus, namespace: kube-system}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: multus}
rules:
  - apiGroups: ["k8s.cni.cncf.io"]
    resources: ["*"]
    verbs: ["*"]
  - apiGroups: [""]
    resources: ["pods", "pods/status"]
    verbs: ["get", "list", "update", "watch"]
  - apiGroups: ["", "events.k8s.io"]
    resources: ["events"]
    verbs: ["create", "patch", "update"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: multus}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: multus}
subjects: [{kind: ServiceAccount, name: multus, namespace: kube-system}]
"""
# CRI enums (k8s.io/cri-api runtime/v1)
NODE, POD, CONTAINER = 2, 0, 1
PROPAGATION = {None: 0, "None": 0, "HostToContainer": 1, "Bidirectional": 2}
_MNT_DETACH = 2


class CriError(AssertionError):
    """A CRI call failed; the message is what crictl printed: the runtime's own report (for a Pod
    sandbox, the CNI error as containerd got it from Multus)."""


def unpacked(name: str) -> Path:
    """shared/k8s/NAME.xz unpacked into BIN_CACHE (once: unpacked again only when the .xz changes)."""
    source = require_shared(f"{name}.xz") / f"{name}.xz"
    target = BIN_CACHE / name
    stamp = f"{source.stat().st_size}-{source.stat().st_mtime_ns}"
    stamp_file = BIN_CACHE / f"{name}.source"
    if target.is_file() and stamp_file.is_file() and stamp_file.read_text() == stamp:
        return target
    BIN_CACHE.mkdir(parents=True, exist_ok=True)
    partial = BIN_CACHE / f".{name}.{os.getpid()}"
    with open(partial, "wb") as out:
        subprocess.run(["xz", "-dc", str(source)], stdout=out, check=True, timeout=120)
    partial.chmod(0o755)
    partial.rename(target)
    stamp_file.write_text(stamp)
    return target


def _bytes(text: str) -> int:
    """A Kubernetes memory quantity (256Mi, 64M, 1000) in bytes."""
    units = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "k": 10**3, "M": 10**6, "G": 10**9}
    for unit, factor in units.items():
        if text.endswith(unit):
            return int(text[: -len(unit)]) * factor
    return int(text)


def _cpu_shares(request: str) -> int:
    """What a kubelet gives a container for a CPU request (millicores * 1024 / 1000, at least 2)."""
    milli = int(request[:-1]) if request.endswith("m") else int(float(request) * 1000)
    return max(2, milli * 1024 // 1000)


@dataclass
class Record:
    """What a node made on the machine outside its run directory: enough to remove it all later,
    also from another process after this one died."""

    containerd: tuple[int, int] | None = None  # (pid, start time)
    sandboxes: dict[str, str] = field(default_factory=dict)  # sandbox id -> network namespace path
    master: str = ""  # the default network's veth end in the host's namespace

    @classmethod
    def load(cls, path: Path) -> Record:
        try:
            raw = json.loads(path.read_text())
        except (OSError, ValueError):
            return cls()
        pid = raw.get("containerd")
        return cls(tuple(pid) if pid else None, dict(raw.get("sandboxes", {})), str(raw.get("master", "")))

    def save(self, path: Path) -> None:
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(self.__dict__))
        temporary.rename(path)


def _start_time(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat[stat.rindex(")") + 2 :].split()[19])


class Node:
    """A private containerd with crictl and Multus in `workdir` (RUNS/<owner>); `close` removes it all."""

    def __init__(self, api: RealKubernetes) -> None:
        self.api = api
        self.workdir = RUNS / OWNER
        self.record = Record()
        self.process: subprocess.Popen[bytes] | None = None
        self.crictl_bin = unpacked(CRICTL)
        self.multus_bin = unpacked(MULTUS)
        self.pause_archive = require_shared("pause-image.oci.tar") / "pause-image.oci.tar"

    # paths
    @property
    def address(self) -> Path:
        return self.workdir / "containerd.sock"

    @property
    def bin_dir(self) -> Path:
        return self.workdir / "cni" / "bin"

    @property
    def conf_dir(self) -> Path:
        return self.workdir / "cni" / "net.d"

    @property
    def logs(self) -> Path:
        return self.workdir / "logs"

    @property
    def cgroup_parent(self) -> str:
        return f"/{_cgroup_name(self.workdir)}"

    def _save(self) -> None:
        self.record.save(self.workdir / "record.json")

    # starting
    def start(self, default_network: Host, agent_socket: Path) -> Node:
        """containerd with Multus as its CNI config, the default network's master link into
        `default_network`, the pause image imported. `agent_socket` is what the node's operator gives
        the runtime (PYWG_CNI_AGENT_SOCKET), which Multus passes on to the entrypoint."""
        clean(self.workdir)  # what a run of this same process left (a module's node after another's)
        for directory in (self.bin_dir, self.conf_dir, self.logs, self.workdir / "multus"):
            directory.mkdir(parents=True)
        self.workdir.chmod(0o700)
        self._save()
        (self.bin_dir / "multus").symlink_to(self.multus_bin)
        for plugin in ("loopback", "macvlan", "static"):
            (self.bin_dir / plugin).symlink_to(DEBIAN_PLUGINS / plugin)
        self.record.master = f"e2e{self.workdir.name.replace('-', '')[-12:]}"  # 15 characters at most
        self._save()
        lan = ["peer", "name", "lan", "netns", default_network.name]
        run(["ip", "link", "add", self.record.master, "type", "veth", *lan])
        run(["ip", "link", "set", "dev", self.record.master, "up"])
        default_network.set_link("lan", True)
        self._multus_config()
        self._containerd(agent_socket)
        self.ctr("images", "import", str(self.pause_archive))
        return self

    def _multus_config(self) -> None:
        manifest = self.workdir / "multus-rbac.yaml"
        manifest.write_text(MULTUS_RBAC)
        self.api.kubectl("apply", "-f", str(manifest))
        path = self.api.write_kubeconfig(
            self.workdir / "multus.kubeconfig", self.api.token_for("kube-system", "multus")
        )
        default = {
            "cniVersion": "0.3.1",
            "name": DEFAULT_NETWORK,
            "type": "macvlan",
            "master": self.record.master,
            "mode": "bridge",
            "ipam": {"type": "static", "addresses": [{"address": DEFAULT_ADDRESS}]},
        }
        multus = {
            "cniVersion": "0.3.1",
            "name": "multus-cni-network",
            "type": "multus",
            "kubeconfig": str(path),
            "cniDir": str(self.workdir / "multus"),
            "binDir": str(self.bin_dir),
            "logFile": str(self.logs / "multus.log"),
            "logLevel": "verbose",
            "delegates": [default],
        }
        (self.conf_dir / "00-multus.conf").write_text(json.dumps(multus, indent=2))

    def _containerd(self, agent_socket: Path) -> None:
        w = self.workdir
        cri = 'plugins."io.containerd.grpc.v1.cri"'
        config = f"""\
version = 2
root = "{w}/root"
state = "{w}/state"
[grpc]
  address = "{self.address}"
[ttrpc]
  address = "{self.address}.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "{w}/opt"
[{cri}]
  sandbox_image = "{PAUSE_IMAGE}"
  # root here lacks CAP_SYS_RESOURCE: without this runc fails ("can't get final child's PID from pipe")
  restrict_oom_score_adj = true
[{cri}.containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"
[{cri}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
[{cri}.containerd.runtimes.runc.options]
  SystemdCgroup = false
  Root = "{w}/runc"
[{cri}.cni]
  bin_dir = "{self.bin_dir}"
  conf_dir = "{self.conf_dir}"
  max_conf_num = 1
"""
        (w / "containerd.toml").write_text(config)
        (w / "crictl.yaml").write_text(
            f"runtime-endpoint: unix://{self.address}\nimage-endpoint: unix://{self.address}\ntimeout: 60\n"
        )
        env = {**os.environ, "PYWG_CNI_AGENT_SOCKET": str(agent_socket), OWNER_ENV: OWNER}
        with open(self.logs / "containerd.log", "ab") as log:
            self.process = subprocess.Popen(
                ["containerd", "--config", str(w / "containerd.toml")],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        process = self.process
        start = _start_time(process.pid)
        assert start is not None, f"containerd exited at once:\n{self.log('containerd.log')}"
        self.record.containerd = (process.pid, start)  # for clean(): a pid alone may be reused
        self._save()

        def serving() -> bool:
            if process.poll() is not None:
                raise AssertionError(
                    f"containerd exited with {process.returncode}:\n{self.log('containerd.log')}"
                )
            return self.crictl("info", check=False).returncode == 0

        wait_until(serving, 30.0, "containerd's CRI service")

    def log(self, name: str, lines: int = 60) -> str:
        try:
            return "\n".join((self.logs / name).read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""

    # CRI
    def crictl(
        self, *args: str, check: bool = True, timeout: float = 120.0
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [str(self.crictl_bin), "--config", str(self.workdir / "crictl.yaml"), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and done.returncode != 0:
            raise CriError(f"crictl {args[0]} failed ({done.returncode}):\n{done.stderr.strip()}")
        return done

    def ctr(self, *args: str) -> str:
        done = subprocess.run(
            ["ctr", "--address", str(self.address), "--namespace", K8S_NAMESPACE, *args],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert done.returncode == 0, f"ctr {' '.join(args)}: {done.stderr}"
        return done.stdout

    def _write(self, name: str, config: Mapping[str, Any]) -> str:
        path = self.workdir / f"{name}.json"
        path.write_text(json.dumps(config, indent=2))
        return str(path)

    def run_pod(self, config: Mapping[str, Any]) -> str:
        """`crictl runp`: the sandbox's ID; CriError with the runtime's report when it fails.

        A sandbox whose network set-up failed stays (NotReady) as with a kubelet, which removes it: so
        does `remove_pod`, and `close`."""
        metadata = config["metadata"]
        path = self._write(f"pod-{metadata['namespace']}-{metadata['name']}", config)
        before = set(self.pod_ids())
        try:
            sandbox = self.crictl("runp", path).stdout.strip()
        finally:
            for made in set(self.pod_ids()) - before:
                self.record.sandboxes[made] = self.netns(made)
            self._save()
        return sandbox

    def pod_ids(self) -> list[str]:
        return self.crictl("pods", "--quiet").stdout.split()

    def inspect_pod(self, sandbox: str) -> dict[str, Any]:
        return dict(json.loads(self.crictl("inspectp", sandbox).stdout))

    def netns(self, sandbox: str) -> str:
        """The sandbox's network namespace path (/var/run/netns/cni-...), "" for the host's network."""
        spec = self.inspect_pod(sandbox)["info"]["runtimeSpec"]
        paths = [n.get("path", "") for n in spec["linux"]["namespaces"] if n["type"] == "network"]
        return paths[0] if paths else ""

    def remove_pod(self, sandbox: str) -> None:
        """`crictl stopp` then `rmp`, as a kubelet does when a Pod is deleted."""
        self.crictl("stopp", sandbox)
        self.crictl("rmp", sandbox)

    def start_container(self, sandbox: str, pod_config: str, config: Mapping[str, Any]) -> str:
        path = self._write(f"container-{config['metadata']['name']}", config)
        container = self.crictl("create", sandbox, path, pod_config).stdout.strip()
        self.crictl("start", container)
        return container

    def container_state(self, container: str) -> dict[str, Any]:
        return dict(json.loads(self.crictl("inspect", container).stdout))

    def wait_exited(self, container: str, timeout: float = 60.0) -> int:
        wait_until(
            lambda: self.container_state(container)["status"]["state"] == "CONTAINER_EXITED",
            timeout,
            f"container {container[:12]} to exit",
        )
        return int(self.container_state(container)["status"]["exitCode"])

    def leftovers(self, sandbox: str, netns: str) -> list[str]:
        """What of a removed sandbox is still on the machine: [] when it is all gone."""
        found = []
        if self.crictl("inspectp", sandbox, check=False).returncode == 0:
            found.append(f"sandbox {sandbox[:12]} in containerd")
        if netns and Path(netns).exists():
            found.append(f"network namespace {netns}")
        socket = shim_socket(self.address, sandbox)
        if socket.exists():
            found.append(f"shim socket {socket}")
        found += [f"libcni cache {p}" for p in cached_results(sandbox)]
        found += [f"Multus cache {p}" for p in _files_naming(self.workdir / "multus", sandbox)]
        found += [f"process {pid} (shim or container)" for pid in _processes_naming(sandbox)]
        return found

    # the end
    def close(self) -> None:
        clean(self.workdir)


def shim_socket(address: Path, sandbox: str) -> Path:
    """Where containerd 1.6 puts a sandbox's shim socket (runtime/v2/shim SocketAddress)."""
    digest = hashlib.sha256(str(address / K8S_NAMESPACE / sandbox).encode()).hexdigest()
    return SHIM_SOCKETS / digest


def _files_naming(directory: Path, text: str) -> list[Path]:
    found = []
    if directory.is_dir():
        for path in directory.rglob("*"):
            with contextlib.suppress(OSError):
                if path.is_file() and (text in path.name or text in path.read_text(errors="replace")):
                    found.append(path)
    return found


def cached_results(sandbox: str) -> list[Path]:
    """libcni's cached results of a sandbox: containerd's own (named by its ID) and those of the
    networks Multus ran (which carry it in their CNI_ARGS)."""
    return _files_naming(CNI_CACHE, sandbox)


def _processes_naming(text: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                if text.encode() in Path(f"/proc/{entry}/cmdline").read_bytes():
                    found.append(int(entry))
    return found


# --- cleaning -------------------------------------------------------------------------------------


def clean(workdir: Path) -> None:
    """Remove everything the node of `workdir` made, from its record: pods (through containerd while
    it runs, so each network gets its DEL), containerd, shims and containers, network namespaces,
    libcni cache entries, shim sockets, cgroups, the default network's link, the directory."""
    record = Record.load(workdir / "record.json")
    address = workdir / "containerd.sock"
    crictl = [str(BIN_CACHE / CRICTL), "--config", str(workdir / "crictl.yaml")]
    alive = record.containerd is not None and _start_time(record.containerd[0]) == record.containerd[1]
    if alive and Path(crictl[0]).exists():
        listed = subprocess.run(
            [*crictl, "pods", "--quiet"], capture_output=True, text=True, timeout=60, check=False
        )
        for sandbox in listed.stdout.split():
            for command in ("stopp", "rmp"):
                subprocess.run([*crictl, command, sandbox], capture_output=True, timeout=120, check=False)
    if alive and record.containerd is not None:
        _end(record.containerd[0])
    runc_root = workdir / "runc" / K8S_NAMESPACE
    if runc_root.is_dir():
        for container in os.listdir(runc_root):
            subprocess.run(
                ["runc", "--root", str(runc_root.parent / K8S_NAMESPACE), "delete", "--force", container],
                capture_output=True,
                timeout=60,
                check=False,
            )
    for pid in _processes_naming(f"-address\0{address}\0"):  # the shims of this containerd
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    for sandbox, netns in record.sandboxes.items():
        if netns and Path(netns).exists():
            _unmount(Path(netns))
            with contextlib.suppress(OSError):
                Path(netns).unlink()
        for path in cached_results(sandbox):
            path.unlink(missing_ok=True)
        shim_socket(address, sandbox).unlink(missing_ok=True)
    parent = _cgroup_name(workdir)
    if CGROUPS.is_dir():
        for hierarchy in CGROUPS.iterdir():
            top = hierarchy / parent
            if top.is_dir():
                for directory in sorted(top.rglob("*"), key=lambda p: len(p.parts), reverse=True):
                    if directory.is_dir():
                        with contextlib.suppress(OSError):
                            directory.rmdir()
                with contextlib.suppress(OSError):
                    top.rmdir()
    if record.master:
        run(["ip", "link", "del", "dev", record.master], check=False)
    for mount in _mounts_under(workdir):
        _unmount(mount)
    shutil.rmtree(workdir, ignore_errors=True)


def _cgroup_name(workdir: Path) -> str:
    return f"pywg-e2e-{workdir.name}"


def _end(pid: int, grace: float = 10.0) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while _start_time(pid) is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def _mounts_under(directory: Path) -> list[Path]:
    """Mount points at or below `directory`, deepest first."""
    found = []
    prefix = str(directory)
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].encode().decode("unicode_escape")
        if point == prefix or point.startswith(prefix + "/"):
            found.append(Path(point))
    return sorted(found, key=lambda p: len(p.parts), reverse=True)


def _unmount(path: Path) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.umount2(str(path).encode(), _MNT_DETACH)  # not mounted: EINVAL, nothing to do


def sweep_dead_runs() -> list[Path]:
    """Clean the run directories of pytest processes that are gone; the directories cleaned."""
    swept = []
    if RUNS.is_dir():
        for directory in RUNS.iterdir():
            if directory.is_dir() and directory.name != OWNER and not owner_alive(directory.name):
                clean(directory)
                swept.append(directory)
    return swept


# --- a DaemonSet's Pod, as a kubelet runs it ------------------------------------------------------


@dataclass
class DaemonSetPod:
    name: str  # the sandbox's; its containers' logs are in Node.logs/NAME
    sandbox: str
    pod_config: str  # the sandbox config file, which `crictl create` needs again
    containers: dict[str, str]  # name -> container ID (init containers too)


def run_daemonset_pod(
    node: Node,
    daemonset: Mapping[str, Any],
    host_paths: Mapping[str, Path],
    service_account: Path,
) -> DaemonSetPod:
    """Run `daemonset`'s Pod (as the API server returns it: defaults filled in) on `node`: each init
    container to completion (exit 0), then the containers. hostPath volumes are mounted from
    `host_paths`[their path] (the node's paths, moved to the test's directories; every hostPath must be
    there); `service_account` is what the kubelet projects at SERVICE_ACCOUNT_PATH."""
    metadata = daemonset["metadata"]
    spec = daemonset["spec"]["template"]["spec"]
    namespaces = {
        "network": NODE if spec.get("hostNetwork") else POD,
        "pid": NODE if spec.get("hostPID") else CONTAINER,
        "ipc": NODE if spec.get("hostIPC") else POD,
    }
    every = [*spec.get("initContainers", []), *spec["containers"]]
    privileged = any((c.get("securityContext") or {}).get("privileged") for c in every)
    name = f"{metadata['name']}-e2e"
    sandbox_config = {
        "metadata": {
            "name": name,
            "namespace": metadata["namespace"],
            "uid": f"{OWNER}-{name}",
            "attempt": 0,
        },
        "log_directory": str(node.logs / name),
        "linux": {
            "cgroup_parent": node.cgroup_parent,
            "security_context": {"privileged": privileged, "namespace_options": namespaces},
        },
    }
    sandbox = node.run_pod(sandbox_config)
    pod_config = str(node.workdir / f"pod-{metadata['namespace']}-{name}.json")
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    containers: dict[str, str] = {}
    for container in every:
        env = container_env(metadata, container)
        config = _container_config(
            container, env, volumes, namespaces, host_paths, service_account, node.api.port
        )
        containers[container["name"]] = node.start_container(sandbox, pod_config, config)
        if container in spec.get("initContainers", []):
            status = node.wait_exited(containers[container["name"]])
            log = node.log(f"{name}/{container['name']}.log")
            assert status == 0, f"init container {container['name']} exited with {status}:\n{log}"
    return DaemonSetPod(name, sandbox, pod_config, containers)


def _container_config(
    container: Mapping[str, Any],
    env: Mapping[str, str],
    volumes: Mapping[str, Any],
    namespaces: Mapping[str, int],
    host_paths: Mapping[str, Path],
    service_account: Path,
    api_port: int,
) -> dict[str, Any]:
    mounts = []
    for mount in container.get("volumeMounts", []):
        volume = volumes[mount["name"]]
        assert set(volume) == {"name", "hostPath"}, f"volume {volume} is not a hostPath: translate it here"
        source = host_paths[volume["hostPath"]["path"]]
        kind = volume["hostPath"].get("type", "")
        if kind == "DirectoryOrCreate":
            source.mkdir(parents=True, exist_ok=True)
        elif kind == "CharDevice":
            assert source.is_char_device(), f"{source} is not a character device"
        mounts.append(
            {
                "container_path": mount["mountPath"],
                "host_path": str(source),
                "readonly": bool(mount.get("readOnly")),
                "propagation": PROPAGATION[mount.get("mountPropagation")],
            }
        )
    mounts.append(
        {"container_path": str(SERVICE_ACCOUNT_PATH), "host_path": str(service_account), "readonly": True}
    )
    security = container.get("securityContext") or {}
    resources = container.get("resources") or {}
    linux_resources: dict[str, int] = {}
    if "memory" in (resources.get("limits") or {}):
        linux_resources["memory_limit_in_bytes"] = _bytes(resources["limits"]["memory"])
    if "cpu" in (resources.get("requests") or {}):
        linux_resources["cpu_shares"] = _cpu_shares(resources["requests"]["cpu"])
    envs = [
        {"key": "KUBERNETES_SERVICE_HOST", "value": "127.0.0.1"},
        {"key": "KUBERNETES_SERVICE_PORT", "value": str(api_port)},
        {"key": OWNER_ENV, "value": OWNER},  # so the session's sweep finds its processes
        *({"key": key, "value": value} for key, value in env.items()),
    ]
    return {
        "metadata": {"name": container["name"]},
        "image": {"image": container["image"]},
        "command": expanded(container.get("command", []), env),
        "args": expanded(container.get("args", []), env),
        "envs": envs,
        "mounts": mounts,
        "log_path": f"{container['name']}.log",
        "linux": {
            "resources": linux_resources,
            "security_context": {
                "privileged": bool(security.get("privileged")),
                "capabilities": {
                    "add_capabilities": list((security.get("capabilities") or {}).get("add", []))
                },
                "namespace_options": dict(namespaces),
            },
        },
    }
