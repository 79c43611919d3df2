"""`pywg up`, `pywg down` and `pywg-userspace`: the long-running commands."""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from pathlib import Path

from pywg.cli import CommandError
from pywg.config import ConfigError, load_config
from pywg.device import Device
from pywg.hotpath import data_path_crypto
from pywg.runtime import netlink_child, tun_offload
from pywg.runtime.daemon import STATE_DIR, Notifier, State, detach, find_state, zombie
from pywg.runtime.engine import Engine, run_engine
from pywg.runtime.netns import resolve_netns
from pywg.runtime.system import SystemClock, disable_core_dumps, system_rng
from pywg.runtime.tun import open_tun
from pywg.runtime.tunnel import SetupError, Tunnel, build_tunnel, reload_tunnel
from pywg.runtime.uapi_server import socket_path
from pywg.runtime.udp import UdpSockets

_log = logging.getLogger("pywg")
STOP_TIMEOUT = 10.0


def _setup_logging() -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s pywg[%(process)d] %(levelname)s %(message)s", force=True
    )


def up(config_path: str, interface: str, netns: str | None, foreground: bool, name: str | None) -> int:
    disable_core_dumps()  # before the private key is read
    try:
        cfg = load_config(config_path)
    except ConfigError as error:
        raise CommandError(str(error)) from None
    except OSError as error:
        raise CommandError(f"{config_path}: {error.strerror or error}") from None
    for warning in cfg.warnings:
        print(f"pywg up: warning: {warning}", file=sys.stderr)
    name = name or interface
    try:
        tunnel = build_tunnel(cfg, interface, netns, name)
    except (SetupError, ConfigError) as error:
        raise CommandError(str(error)) from None
    where = f" in network namespace {netns}" if netns else ""
    message = (
        f"{interface} is up{where}, UDP port {tunnel.udp.port}; `wg show {name}` shows it, "
        f"`pywg down {interface}{f' --netns {netns}' if netns else ''}` stops it"
    )
    state = State(name, interface, tunnel.netns, os.getpid(), str(Path(config_path).resolve()))
    if foreground:
        _setup_logging()
        print(message, flush=True)
        return _serve(tunnel, state, Notifier(None))
    outcome = detach(STATE_DIR / f"{name}.log")
    if isinstance(outcome, int):
        os._exit(outcome)  # the caller's copy of the tunnel belongs to the daemon now
    _setup_logging()
    state.pid = os.getpid()
    status = _serve(tunnel, state, outcome, message)
    os._exit(status)


def _serve(tunnel: Tunnel, state: State, notifier: Notifier, message: str = "") -> int:
    config_path = state.config

    def reload() -> None:
        try:
            reload_tunnel(tunnel, load_config(config_path) if config_path else tunnel.config)
        except (ConfigError, OSError) as error:
            _log.error("reload failed, keeping the running configuration: %s", error)

    state.save()
    try:
        reason = run_engine(tunnel.engine, on_ready=lambda: notifier.ready(message), on_reload=reload)
        _log.info("stopping: %s", reason)
        return 0
    except Exception as error:
        notifier.failed(f"the engine failed: {type(error).__name__}")
        _log.exception("engine failed")
        return 1
    finally:
        tunnel.close()
        state.remove()


def down(interface: str, netns: str | None) -> int:
    try:
        resolved = resolve_netns(netns)
    except OSError:
        resolved = f"/run/netns/{netns}" if netns and "/" not in netns else netns
    state = find_state(interface, resolved)
    if state is None:
        where = f" in network namespace {netns}" if netns else ""
        raise CommandError(f"no pywg tunnel {interface}{where} is running")
    os.kill(state.pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    while time.monotonic() < deadline:
        if not _running(state.pid):
            return 0
        time.sleep(0.05)
    os.kill(state.pid, signal.SIGKILL)  # it would not stop: clean up after it
    netlink_child.delete_link(state.netns, state.interface)
    socket_path(state.name).unlink(missing_ok=True)
    state.remove()
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


def userspace(interface: str, foreground: bool) -> int:
    """wireguard-go's contract: create the TUN, serve UAPI, run until the interface goes."""
    disable_core_dumps()  # `wg set` gives it a private key
    try:
        tun = open_tun(interface, vnet_hdr=tun_offload.available())
    except OSError as error:
        raise CommandError(f"cannot create TUN {interface}: {error}") from None
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
        raise CommandError(f"cannot serve UAPI for {interface}: {error}") from None
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
