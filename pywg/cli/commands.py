"""`pywg up`, `down`, `reload`, `stats` and `pywg-userspace`: the commands that act on tunnels.

A tunnel is named by its UAPI name (`--name`, by default the interface name): the socket
/var/run/wireguard/NAME.sock that `wg show NAME` talks to, unique on the machine, and the state file
/run/pywg/NAME.json that `pywg down` reads. `pywg down` acts only on a tunnel whose interface is in
the namespace it is asked about (--netns, or the one it runs in); it also accepts an interface name
there, unless that names more than one tunnel.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from pywg.cli.errors import CommandError
from pywg.config import ConfigError, InterfaceConfig, load_config
from pywg.core import Device, ReloadRefused
from pywg.native.hotpath import data_path_crypto
from pywg.runtime import netconfig, tun_offload
from pywg.runtime.daemon import STATE_DIR, Notifier, State, detach, running_tunnels, zombie
from pywg.runtime.engine import Engine, run_engine
from pywg.runtime.netns import NETNS_RUN_DIR, netns_identity
from pywg.runtime.oserror import describe_os_error
from pywg.runtime.system import SystemClock, disable_core_dumps, system_rng
from pywg.runtime.tun import open_tun
from pywg.runtime.tunnel import SetupError, Tunnel, build_tunnel, reload_tunnel
from pywg.runtime.uapi_server import query, socket_in_use, socket_path
from pywg.runtime.udp import UdpSockets

if TYPE_CHECKING:
    from pywg.runtime.metrics import MetricsServer, TunnelSample

_log = logging.getLogger("pywg")
STOP_TIMEOUT = 10.0
RELOAD_TIMEOUT = 30.0  # the daemon resolves endpoint names and configures the link while we wait
CAP_NET_ADMIN = 12
INIT_NETNS = "/proc/1/ns/net"


def _setup_logging() -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s pywg[%(process)d] %(levelname)s %(message)s", force=True
    )


# --------------------------------------------------------------------------------------------
# Privileges


def privileged() -> bool:
    """Root, or CAP_NET_ADMIN in the effective set."""
    if os.geteuid() == 0:
        return True
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) >> CAP_NET_ADMIN & 1)
    except (OSError, ValueError, IndexError):
        pass
    return False


def require_privileges() -> None:
    """Refuse before doing anything: without privileges every answer would be wrong or a traceback."""
    if not privileged():
        raise CommandError("needs root (or CAP_NET_ADMIN); run it with sudo")


# --------------------------------------------------------------------------------------------
# up


def load_and_warn(config_path: str, command: str) -> InterfaceConfig:
    """The config file parsed, its warnings printed (each naming the file); CommandError if bad."""
    disable_core_dumps()  # before the private key is read
    try:
        cfg = load_config(config_path)
    except ConfigError as error:
        raise CommandError(str(error)) from None
    except OSError as error:
        raise CommandError(f"{config_path}: {error.strerror or error}") from None
    for warning in cfg.warnings:
        print(f"pywg {command}: warning: {warning}", file=sys.stderr)
    return cfg


def up(
    config_path: str,
    interface: str,
    netns: str | None,
    foreground: bool,
    name: str | None,
    metrics_address: str | None = None,
) -> int:
    require_privileges()
    cfg = load_and_warn(config_path, "up")
    name = name or interface
    metrics = _metrics_server(metrics_address) if metrics_address else None
    try:
        tunnel = build_tunnel(cfg, interface, netns, name)
    except BaseException as error:
        if metrics is not None:
            metrics.close()
        if isinstance(error, SetupError):
            raise CommandError(str(error)) from None
        if isinstance(error, ConfigError):  # an endpoint's host name did not resolve
            raise CommandError(f"{config_path}: {error}") from None
        raise
    if metrics is not None:
        from pywg.runtime.metrics import TunnelCollector

        metrics.registry.register(TunnelCollector(["interface"], lambda: _sample(tunnel)))
    where = f" in network namespace {netns}" if netns else ""
    message = (
        f"{interface} is up{where}, UDP port {tunnel.udp.port}; `wg show {name}` shows it, "
        f"`pywg reload {name}` rereads {config_path}, "
        f"`pywg down {name}{f' --netns {netns}' if netns else ''}` stops it"
    )
    if metrics is not None:
        message += f"; metrics at {metrics.url}"
    state = State(
        name,
        interface,
        tunnel.netns,
        os.getpid(),
        str(Path(config_path).resolve()),
        list(netns_identity(tunnel.netns)),
    )
    if foreground:
        _setup_logging()
        print(message, flush=True)
        return _serve(tunnel, state, Notifier(None), metrics=metrics)
    outcome = detach(STATE_DIR / f"{name}.log")
    if isinstance(outcome, int):
        os._exit(outcome)  # the caller's copy of the tunnel belongs to the daemon now
    _setup_logging()
    state.pid = os.getpid()
    status = _serve(tunnel, state, outcome, message, metrics)
    os._exit(status)


def _metrics_server(address: str) -> MetricsServer:
    """/metrics on `address`, bound before anything else is made (a taken port fails `pywg up` at
    once), served once the engine runs. prometheus-client is imported only here: it costs ~10 MB."""
    from pywg.runtime.metrics import MetricsAddressError, MetricsServer

    try:
        return MetricsServer(address)
    except MetricsAddressError as error:
        raise CommandError(str(error)) from None
    except OSError as error:
        raise CommandError(f"--metrics {address}: {describe_os_error(error)}") from None


def _sample(tunnel: Tunnel) -> list[TunnelSample]:
    """The tunnel's counters, taken on the engine's loop."""
    from pywg.runtime.metrics import on_loop, sample_device

    loop = tunnel.engine.loop
    labels = (tunnel.interface,)
    return [] if loop is None else [on_loop(loop, lambda: sample_device(tunnel.device, labels))]


def _serve(
    tunnel: Tunnel, state: State, notifier: Notifier, message: str = "", metrics: MetricsServer | None = None
) -> int:
    config_path = state.config

    def ready() -> None:
        if metrics is not None:
            metrics.start()
        notifier.ready(message)

    def reload() -> tuple[str, list[str]]:
        """Reread the config file (SIGHUP, `pywg reload`); what runs now, and the file's warnings."""
        try:
            cfg = load_config(config_path) if config_path else tunnel.config
            reload_tunnel(tunnel, cfg)
        except ConfigError as error:
            reason = str(error)
        except OSError as error:
            reason = f"{config_path}: {describe_os_error(error)}"
        else:
            for warning in cfg.warnings:
                _log.warning("reload: %s", warning)
            return f"{len(cfg.peers)} peers, {len(tunnel.routes)} routes from {config_path}", cfg.warnings
        _log.error("reload failed, keeping the running configuration: %s", reason)
        raise ReloadRefused(f"{reason}; the running configuration stays")

    state.save()
    try:
        reason = run_engine(tunnel.engine, on_ready=ready, on_reload=reload)
        _log.info("stopping: %s", reason)
        return 0
    except Exception as error:
        notifier.failed(f"the engine failed: {type(error).__name__}")
        _log.exception("engine failed")
        return 1
    finally:
        if metrics is not None:
            metrics.close()
        tunnel.close()
        state.remove()


# --------------------------------------------------------------------------------------------
# down


def namespace_label(state: State) -> str:
    """How to name the namespace of a tunnel's interface, as --netns takes it: its name under
    /run/netns, else the path it was started with, else a /proc path to it."""
    identity = state.namespace()
    if identity is not None:
        try:
            names = sorted(os.listdir(NETNS_RUN_DIR))
        except OSError:
            names = []
        for netns_name in names:
            try:
                st = os.stat(os.path.join(NETNS_RUN_DIR, netns_name))
            except OSError:
                continue
            if (st.st_dev, st.st_ino) == identity:
                return netns_name
    if state.netns:
        return state.netns
    try:
        st = os.stat(INIT_NETNS)
        if identity == (st.st_dev, st.st_ino):
            return INIT_NETNS
    except OSError:
        pass
    return f"/proc/{state.pid}/ns/net"


def _described(state: State) -> str:
    return f"tunnel {state.name} (interface {state.interface} in namespace {namespace_label(state)})"


def find_tunnel(name: str, netns: str | None) -> State:
    """The one `pywg up` tunnel that `name` names in namespace `netns` (None: ours), or CommandError
    saying why there is none: not running, running elsewhere (and how to reach it), ambiguous."""
    try:
        target = netns_identity(netns)
    except OSError as error:
        raise CommandError(describe_os_error(error)) from None
    try:
        tunnels = running_tunnels()
    except PermissionError as error:
        raise CommandError(f"{describe_os_error(error)}; needs root") from None
    by_name = [t for t in tunnels if t.name == name]
    by_interface = [t for t in tunnels if t.interface == name and t.name != name and t.namespace() == target]
    candidates = by_name + by_interface
    if len(candidates) > 1:
        listed = ", ".join(_described(t) for t in candidates)
        raise CommandError(
            f"{name} is ambiguous: it names {listed}; give the UAPI name of one (as for `wg show`)"
        )
    if candidates and candidates[0].namespace() == target:
        return candidates[0]
    elsewhere = candidates or [t for t in tunnels if t.interface == name]
    if len(elsewhere) == 1:
        tunnel, label = elsewhere[0], namespace_label(elsewhere[0])
        hint = f"use --netns {label}"
        if tunnel.name != name:
            hint = f"use `pywg down {tunnel.name} --netns {label}`"
        raise CommandError(f"{name} is running in namespace {label}; {hint}")
    if elsewhere:
        listed = ", ".join(_described(t) for t in elsewhere)
        raise CommandError(f"no pywg tunnel {name} here; elsewhere: {listed}; use --netns with its UAPI name")
    if socket_in_use(socket_path(name)):
        raise CommandError(
            f"{name} was not started by `pywg up`: another program serves {socket_path(name)} "
            "(wireguard-go, pywg-userspace or the pywg CNI node agent); stop it with that program"
        )
    where = f" in network namespace {netns}" if netns else ""
    raise CommandError(f"no pywg tunnel {name}{where} is running")


def down(name: str, netns: str | None) -> int:
    require_privileges()
    state = find_tunnel(name, netns)
    label = namespace_label(state)
    with contextlib.suppress(ProcessLookupError):  # it may have ended since
        os.kill(state.pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    while time.monotonic() < deadline:
        if not _running(state.pid):
            print(f"stopped {state.name}: interface {state.interface} removed from namespace {label}")
            return 0
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(state.pid, signal.SIGKILL)  # it would not stop: clean up after it
    netconfig.delete_link(state.netns, state.interface)
    socket_path(state.name).unlink(missing_ok=True)
    state.remove()
    print(
        f"stopped {state.name} (killed: it did not stop within {STOP_TIMEOUT:.0f} s): "
        f"interface {state.interface} removed from namespace {label}"
    )
    return 0


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie of our own child counts as gone.
    try:
        return os.waitpid(pid, os.WNOHANG) == (0, 0)
    except ChildProcessError:
        return not zombie(pid)


# --------------------------------------------------------------------------------------------
# reload, stats: requests on the tunnel's UAPI socket, so they reach exactly the tunnel `wg` reaches


def ask(name: str, request: bytes, timeout: float = 5.0) -> dict[str, list[str]]:
    """The reply of the process serving UAPI name `name`: its values by key, in order."""
    require_privileges()
    path = socket_path(name)
    try:
        reply = query(path, request, timeout)
    except FileNotFoundError:
        raise CommandError(f"cannot reach {name}: no tunnel of that name is running (no {path})") from None
    except ConnectionRefusedError:
        raise CommandError(f"cannot reach {name}: nothing answers on {path} (a leftover socket)") from None
    except TimeoutError:
        raise CommandError(f"{name} did not answer within {timeout:.0f} s") from None
    except OSError as error:
        raise CommandError(f"cannot reach {name}: {describe_os_error(error)}") from None
    values: dict[str, list[str]] = {}
    for line in reply.decode(errors="replace").splitlines():
        key, equals, value = line.partition("=")
        if equals:
            values.setdefault(key, []).append(value)
    return values


def reload(name: str) -> int:
    values = ask(name, b"reload=1\n\n", RELOAD_TIMEOUT)
    for warning in values.get("warning", []):
        print(f"pywg reload: warning: {warning}", file=sys.stderr)
    if values.get("errno") == ["0"] and "reloaded" in values:
        print(f"reloaded {name}: {values['reloaded'][0]}")
        return 0
    if "error" in values:
        raise CommandError(f"{name}: {values['error'][0]}")
    if values.get("errno", ["-22"]) == ["-22"]:  # EINVAL: it does not know the request
        raise CommandError(f"{name} does not reload: it is not a `pywg up` tunnel (wireguard-go?)")
    raise CommandError(f"{name}: the reload failed inside its process; {STATE_DIR}/{name}.log says why")


# --------------------------------------------------------------------------------------------
# pywg-userspace


def userspace(interface: str, foreground: bool) -> int:
    """wireguard-go's contract: create the TUN, serve UAPI, run until the interface goes."""
    require_privileges()
    disable_core_dumps()  # `wg set` gives it a private key
    try:
        tun = open_tun(interface, vnet_hdr=tun_offload.available())
    except OSError as error:
        raise CommandError(f"cannot create TUN {interface}: {describe_os_error(error)}") from None
    tun.movable = True  # `ip link set IFNAME netns OTHER` must keep it working
    udp = UdpSockets(0)
    device = Device(None, clock=SystemClock(), rng=system_rng, crypto=data_path_crypto())
    device.listen_port = udp.port
    engine = Engine(device, tun, udp, interface)
    try:
        engine.uapi.bind()
    except OSError as error:
        tun.close()
        udp.close()
        raise CommandError(f"cannot serve UAPI for {interface}: {describe_os_error(error)}") from None
    notifier = Notifier(None)
    if not foreground:
        outcome = detach(None)
        if isinstance(outcome, int):
            os._exit(outcome)
        notifier = outcome
    _setup_logging()
    try:
        reason = run_engine(engine, on_ready=lambda: notifier.ready(f"{interface} is up (pywg userspace)"))
        _log.info("stopping: %s", reason)
    finally:
        engine.uapi.close()
        tun.close()
        udp.close()
    if not foreground:
        os._exit(0)
    return 0
