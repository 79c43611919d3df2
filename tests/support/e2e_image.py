"""The shipped image, built from deploy/Containerfile here, where no container registry is reachable.

deploy/Containerfile takes its base as a build argument (BASE_IMAGE, Docker Hub's debian:12-slim by
default). The test base is Debian 12 made from Debian's packages: `mmdebstrap --variant=minbase` with
the dpkg path excludes of the slim images (documentation, manual pages, locales), imported with
`podman import`. podman keeps its images and state in E2E_CACHE/podman (overlay driver), so the base
is made once per machine and the build's layers are reused: only what changed since the last build is
built again. The build reaches Debian's mirror and PyPI (host network), and pip in it trusts what the
host trusts (the host's CA bundle and a pip.conf naming it, mounted read-only for the build: where a
proxy intercepts TLS, that is where its CA is). `podman save` writes the image as a docker-archive for
`ctr images import`.
"""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from tests.support.k8s_cluster import CHECKOUT, E2E_CACHE

# podman's images (overlay driver), run state and temporary files: it records the last two in its
# database and refuses others later, so all three are fixed, in the cache.
PODMAN = E2E_CACHE / "podman"
BASE_IMAGE = "localhost/pywg-e2e-debian:12"
MIRRORS = (
    "deb http://deb.debian.org/debian bookworm main",
    "deb http://deb.debian.org/debian bookworm-updates main",
    "deb http://deb.debian.org/debian-security bookworm-security main",
)
# What Docker Hub's slim Debian images leave out (their /etc/dpkg/dpkg.cfg.d/docker), so the image's
# size is close to one built FROM debian:12-slim.
SLIM_EXCLUDES = (
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/locale/*",
    "path-include=/usr/share/locale/locale.alias",
    "path-exclude=/usr/share/lintian/*",
)
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
# Where the build sees the host's CA bundle, and the pip.conf that makes pip use it: not over the
# image's own bundle, which the ca-certificates package rewrites when the build installs it.
BUILD_CA, BUILD_PIP_CONF = "/etc/pywg-build-ca.crt", "/etc/pip.conf"


def daemonset_image() -> str:
    """The image deploy/daemonset.yaml runs (localhost/pywg:VERSION): the name the build gets."""
    for doc in yaml.safe_load_all((CHECKOUT / "deploy" / "daemonset.yaml").read_text()):
        if doc and doc["kind"] == "DaemonSet":
            return str(doc["spec"]["template"]["spec"]["containers"][0]["image"])
    raise AssertionError("deploy/daemonset.yaml has no DaemonSet")


@dataclass
class BuiltImage:
    name: str
    image_id: str
    size: int  # bytes, uncompressed, as podman reports it
    base_size: int
    archive: Path  # docker-archive for `ctr images import`
    timings: dict[str, float]  # seconds per step that ran: base (only when it was made), build, save


PODMAN_OPTIONS = (
    "--root", str(PODMAN / "storage"), "--runroot", str(PODMAN / "run"), "--tmpdir", str(PODMAN / "tmp"),
    "--storage-driver", "overlay", "--cgroup-manager", "cgroupfs", "--events-backend", "none",
)  # fmt: skip


class Podman:
    """podman with PODMAN_OPTIONS; what it prints goes to `log`."""

    def __init__(self, log: Path) -> None:
        self.log = log

    def __call__(self, *args: str, timeout: float = 600.0, output: bool = False) -> str:
        """podman ARGS: its standard output when `output`, else that goes to the log too."""
        command = ["podman", *PODMAN_OPTIONS, *args]
        with open(self.log, "ab") as log:
            log.write(f"\n$ {' '.join(command)}\n".encode())
            log.flush()
            done = subprocess.run(
                command, stdout=subprocess.PIPE if output else log, stderr=log, timeout=timeout, check=False
            )
        if done.returncode != 0:
            raise AssertionError(
                f"podman {args[0]} failed ({done.returncode}); the end of {self.log}:\n{tail(self.log)}"
            )
        return done.stdout.decode(errors="replace") if output else ""

    def exists(self, image: str) -> bool:
        command = ["podman", *PODMAN_OPTIONS, "image", "exists", image]
        return subprocess.run(command, capture_output=True, check=False).returncode == 0

    def inspect(self, image: str, field: str) -> str:
        return self("image", "inspect", "--format", f"{{{{.{field}}}}}", image, output=True).strip()


def tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return ""


def make_base(podman: Podman, workdir: Path) -> None:
    """A Debian 12 base from Debian's packages: mmdebstrap into a tarball, podman import."""
    tarball = workdir / "debian-12.tar"
    command = ["mmdebstrap", "--variant=minbase", "--format=tar", *(f"--dpkgopt={x}" for x in SLIM_EXCLUDES)]
    with open(podman.log, "ab") as log:
        log.write(f"\n$ {' '.join(command)} bookworm {tarball}\n".encode())
        log.flush()
        done = subprocess.run(
            [*command, "bookworm", str(tarball), *MIRRORS], stdout=log, stderr=log, timeout=900, check=False
        )
    if done.returncode != 0:
        raise AssertionError(
            f"mmdebstrap failed ({done.returncode}); the end of {podman.log}:\n{tail(podman.log)}"
        )
    try:
        podman("import", "--quiet", str(tarball), BASE_IMAGE)
    finally:
        tarball.unlink(missing_ok=True)


def build_image(workdir: Path) -> BuiltImage:
    """deploy/Containerfile built on the cached Debian base (made first if missing), tagged as the
    DaemonSet names it, saved to `workdir`/image.tar."""
    name = daemonset_image()
    timings: dict[str, float] = {}
    PODMAN.mkdir(parents=True, exist_ok=True)
    podman = Podman(workdir / "podman.log")
    if not podman.exists(BASE_IMAGE):
        started = time.monotonic()
        make_base(podman, workdir)
        timings["base"] = time.monotonic() - started
    started = time.monotonic()
    trust = []
    if CA_BUNDLE.is_file():
        pip_conf = workdir / "pip.conf"
        pip_conf.write_text(f"[global]\ncert = {BUILD_CA}\n")
        trust = ["--volume", f"{CA_BUNDLE}:{BUILD_CA}:ro", "--volume", f"{pip_conf}:{BUILD_PIP_CONF}:ro"]
    # --jobs 2: the run stage's apt-get runs while the build stage compiles.
    podman(
        "build", "--jobs", "2", "--network", "host", *trust, "--build-arg", f"BASE_IMAGE={BASE_IMAGE}",
        "--file", str(CHECKOUT / "deploy" / "Containerfile"), "--tag", name, str(CHECKOUT),
        timeout=1200,
    )  # fmt: skip
    timings["build"] = time.monotonic() - started
    size, base_size = int(podman.inspect(name, "Size")), int(podman.inspect(BASE_IMAGE, "Size"))
    started = time.monotonic()
    archive = workdir / "image.tar"
    podman("save", "--quiet", "--format", "docker-archive", "--output", str(archive), name)
    timings["save"] = time.monotonic() - started
    # Every build leaves the image it replaced, untagged, and the build stage's layers, which the next
    # build reuses: untagged images go after a week, so the cache does not grow without end.
    podman("image", "prune", "--force", "--filter", "until=168h")
    return BuiltImage(name, podman.inspect(name, "Id"), size, base_size, archive, timings)
