"""The `pywg` command line: the parser of every subcommand, and the entry points.

What acts on a tunnel (up, down, reload, stats, pywg-userspace) is in pywg/cli/commands.py,
imported only when such a command runs. Each subcommand is one `_add_<name>` function that adds
its parser and sets `run`, a function from the parsed arguments to an exit status; `_SUBCOMMANDS`
lists them in help order. To add a subcommand (up, down, demo, version, ...) write its `_add_...`
and `_run_...` and list it.

The key subcommands behave like wireguard-tools' `wg genkey`, `wg genpsk` and `wg pubkey`:
the same output (one base64 key and a newline), the same warning when a key is about to be
written to a file others can read. Errors are one line on stderr and exit status 1; key text
given on stdin is never repeated back.
"""

from __future__ import annotations

import argparse
import os
import re
import stat
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO, TextIO

from pywg import __version__
from pywg.cli.errors import CommandError
from pywg.core import (
    KeyFormatError,
    decode_key,
    encode_key,
    generate_preshared_key,
    generate_private_key,
    public_key_for,
)
from pywg.core.keys import KEY_LEN_BASE64

PROG = "pywg"

Run = Callable[[argparse.Namespace], int]

# What `wg genkey` and `wg genpsk` print on stderr when stdout is a file others can read.
WORLD_ACCESSIBLE_WARNING = (
    "Warning: writing to world accessible file.\nConsider setting the umask to 077 and trying again.\n"
)

# `wg pubkey` accepts only these after the key: C isspace() and NUL.
_TRAILING_ALLOWED = b" \t\n\v\f\r\0"


# --------------------------------------------------------------------------------------------
# genkey, genpsk, pubkey


def _warn_if_world_accessible(stdout: TextIO, stderr: TextIO) -> None:
    """Mirror `wg genkey`: warn when stdout is a regular file with any permission for others."""
    try:
        mode = os.fstat(stdout.fileno()).st_mode
    except (OSError, ValueError, AttributeError):  # not backed by a descriptor (a test's buffer)
        return
    if stat.S_ISREG(mode) and mode & stat.S_IRWXO:
        stderr.write(WORLD_ACCESSIBLE_WARNING)
        stderr.flush()


def _run_genkey(args: argparse.Namespace) -> int:
    _warn_if_world_accessible(sys.stdout, sys.stderr)
    print(encode_key(generate_private_key(os.urandom)))
    return 0


def _run_genpsk(args: argparse.Namespace) -> int:
    _warn_if_world_accessible(sys.stdout, sys.stderr)
    print(encode_key(generate_preshared_key(os.urandom)))
    return 0


def read_key_from(stream: BinaryIO, field: str = "private key") -> bytes:
    """One base64 key from a stream, read the way `wg pubkey` reads it.

    The key is the first 44 bytes; after it only whitespace and NUL bytes may follow, up to
    the end of the stream. The rest is read in pieces, so an endless stream fails early.
    """
    head = stream.read(KEY_LEN_BASE64)
    while chunk := stream.read(4096):
        if chunk.strip(_TRAILING_ALLOWED):
            raise CommandError(f"{field}: trailing characters found after the key")
    try:
        return decode_key(head.rstrip(_TRAILING_ALLOWED).decode("ascii"), field)
    except UnicodeDecodeError:
        raise CommandError(f"{field}: not base64 (it has non-ASCII bytes)") from None
    except KeyFormatError as exc:
        raise CommandError(str(exc)) from None


def _run_pubkey(args: argparse.Namespace) -> int:
    private = read_key_from(sys.stdin.buffer)
    print(encode_key(public_key_for(private)))
    return 0


def _add_genkey(subcommands: argparse._SubParsersAction) -> None:
    parser = subcommands.add_parser(
        "genkey",
        help="print a new private key in base64",
        description="Print a new random private key (clamped for Curve25519) in base64, as `wg genkey`.",
    )
    parser.set_defaults(run=_run_genkey)


def _add_genpsk(subcommands: argparse._SubParsersAction) -> None:
    parser = subcommands.add_parser(
        "genpsk",
        help="print a new preshared key in base64",
        description="Print a new random 32-byte preshared key in base64, as `wg genpsk`.",
    )
    parser.set_defaults(run=_run_genpsk)


def _add_pubkey(subcommands: argparse._SubParsersAction) -> None:
    parser = subcommands.add_parser(
        "pubkey",
        help="read a private key on stdin, print its public key",
        description="Read a base64 private key on stdin and print its public key in base64, as `wg pubkey`.",
    )
    parser.set_defaults(run=_run_pubkey)


def _run_demo(args: argparse.Namespace) -> int:
    from pywg.runtime.demo import run_local_demo, run_netns_demo

    if args.in_memory:
        return run_local_demo(args.packets)
    return run_netns_demo()


def _add_demo(subcommands: argparse._SubParsersAction) -> None:
    parser = subcommands.add_parser(
        "demo",
        help="run WireGuard between two network namespaces: pywg <-> pywg, then pywg <-> wireguard-go",
        description=(
            "As root: make two network namespaces joined by a veth pair, bring up `pywg up` in both, "
            "ping through the tunnel (IPv4 and IPv6), show `wg show` and an iperf3 throughput figure; "
            "then replace one end with wireguard-go and do it again. Everything is removed at the end, "
            "also on failure or Ctrl-C. With --in-memory (no root needed): two pywg devices in one "
            "process, on the real clock."
        ),
    )
    parser.add_argument(
        "--in-memory", action="store_true", help="run two devices in one process instead (no root needed)"
    )
    parser.add_argument(
        "--packets", type=int, default=2000, help="with --in-memory: data packets to send (default 2000)"
    )
    parser.set_defaults(run=_run_demo)


# What `pywg up` names the interface without --interface: a wg-quick file NAME.conf gives NAME, as
# `wg-quick up` does (its rule for NAME); any other file (the CNI's config.json) gives the CNI's name.
DEFAULT_INTERFACE = "net1"
_WG_QUICK_NAME = re.compile(r"[a-zA-Z0-9_=+.-]{1,15}")


def default_interface(config: str) -> str:
    name = Path(config).name
    if not name.endswith(".conf"):
        return DEFAULT_INTERFACE
    stem = name.removesuffix(".conf")
    if not _WG_QUICK_NAME.fullmatch(stem):
        raise CommandError(
            f"{config}: cannot name the interface after the file as wg-quick does ({stem!r} is not "
            "1-15 of letters, digits and _=+.-); give one with --interface"
        )
    return stem


def _run_up(args: argparse.Namespace) -> int:
    interface = args.interface or default_interface(args.config)
    from pywg.cli.commands import up

    return up(args.config, interface, args.netns, args.foreground, args.name, args.metrics)


def _add_up(subcommands: argparse._SubParsersAction) -> None:
    parser = subcommands.add_parser(
        "up",
        help="bring up a tunnel from a config file",
        description=(
            "Create TUN interface IFNAME (in network namespace NS with --netns), configure its addresses "
            "and routes from CONFIG (the Kubernetes Secret's config.json, or a wg-quick .conf file) and "
            "run the tunnel under the UAPI name NAME, which `wg show NAME`, `pywg stats NAME`, "
            "`pywg reload NAME` and `pywg down NAME` take. Returns once the tunnel is ready, then runs "
            "in the background (log: /run/pywg/NAME.log) unless --foreground. Needs root."
        ),
    )
    parser.add_argument("config", metavar="CONFIG", help="config.json (JSON) or a wg-quick .conf file (INI)")
    parser.add_argument(
        "--interface",
        "-i",
        metavar="IFNAME",
        help=(
            f"interface name; default: wg0 for a wg-quick file wg0.conf (named after the file, as "
            f"wg-quick does), {DEFAULT_INTERFACE} for any other file"
        ),
    )
    parser.add_argument(
        "--netns",
        metavar="NS",
        help=(
            "network namespace of the interface: a name under /run/netns or a path (/proc/PID/ns/net). "
            "Only the interface goes there: the UDP socket stays in the namespace pywg up runs in "
            "(run it under `ip netns exec NS` to put both in NS)"
        ),
    )
    parser.add_argument(
        "--name",
        metavar="NAME",
        help=(
            "UAPI name of the tunnel (default: IFNAME): /var/run/wireguard/NAME.sock, unique on the "
            "machine, so a second namespace's tunnel with the same IFNAME needs another NAME"
        ),
    )
    parser.add_argument(
        "--foreground", "-f", action="store_true", help="stay in the foreground, logging to stderr"
    )
    parser.add_argument(
        "--metrics",
        metavar="ADDRESS:PORT",
        help=(
            "serve Prometheus metrics of the tunnel at http://ADDRESS:PORT/metrics (e.g. 127.0.0.1:9587, "
            "[::1]:9587); off by default"
        ),
    )
    parser.set_defaults(run=_run_up)


def _run_down(args: argparse.Namespace) -> int:
    from pywg.cli.commands import down

    return down(args.name, args.netns)


def _add_down(subcommands: argparse._SubParsersAction) -> None:
    parser = subcommands.add_parser(
        "down",
        help="stop a tunnel started by `pywg up`",
        description=(
            "Stop the `pywg up` tunnel NAME whose interface is in namespace NS (default: the namespace "
            "pywg down runs in) and remove all it made: interface, routes, UAPI socket, state file "
            "(the log /run/pywg/NAME.log stays). A tunnel in another namespace is never touched: pywg "
            "down says where it runs. Needs root."
        ),
    )
    parser.add_argument(
        "name",
        metavar="NAME",
        help=(
            "the tunnel's UAPI name, as `pywg up` printed it (its --name, by default the interface "
            "name); an interface name in NS works too, unless it names more than one tunnel"
        ),
    )
    parser.add_argument(
        "--netns", metavar="NS", help="the namespace of the tunnel's interface, as given to pywg up"
    )
    parser.set_defaults(run=_run_down)


def _run_reload(args: argparse.Namespace) -> int:
    from pywg.cli.commands import reload

    return reload(args.name)


def _add_reload(subcommands: argparse._SubParsersAction) -> None:
    parser = subcommands.add_parser(
        "reload",
        help="reread a `pywg up` tunnel's config file and apply it",
        description=(
            "Make the `pywg up` tunnel NAME reread its config file and apply it in place: keys, peers, "
            "endpoints, addresses, routes, MTU, port and fwmark. Peers whose settings did not change "
            "keep their sessions. If the file has an error, the running configuration stays and the error "
            "is shown. "
            "SIGHUP to the tunnel's process does the same, with the outcome only in its log. Needs root."
        ),
    )
    parser.add_argument("name", metavar="NAME", help="the tunnel's UAPI name (as for `wg show`)")
    parser.set_defaults(run=_run_reload)


def version_text() -> str:
    """`pywg version`: the release and the data path the engine would use here."""
    from pywg.native import loader
    from pywg.runtime import tun_offload, udp

    return (
        f"{PROG} {__version__}\ndata path: {loader.describe()}\n"
        f"TUN offloads: {tun_offload.describe()}\nUDP batching: {udp.describe_batching()}"
    )


def _run_version(args: argparse.Namespace) -> int:
    print(version_text())
    return 0


def _add_version(subcommands: argparse._SubParsersAction) -> None:
    parser = subcommands.add_parser(
        "version",
        help="print the version and which data path is active (C hot path or pure Python)",
        description=(
            "Print pywg's version and the data path `pywg up` would use: the C hot path "
            "(pywg.native._hotpath with its OpenSSL version) or pure Python, with the reason "
            "(not built, or PYWG_NO_EXT=1); and whether TUN offloads and recvmmsg/sendmmsg are on "
            "(PYWG_NO_TUN_OFFLOAD=1, PYWG_NO_MMSG=1 turn them off)."
        ),
    )
    parser.set_defaults(run=_run_version)


class _VersionAction(argparse.Action):
    """`--version`: the same text as `pywg version` (argparse's own would re-wrap its lines)."""

    def __init__(self, option_strings: list[str], dest: str = argparse.SUPPRESS, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *args: Any) -> None:
        print(version_text())
        parser.exit()


# Why a datagram from the network or a packet from the TUN was dropped: the counters of
# `pywg stats`, as the device and engine name them (Device.count_drop).
DROP_REASONS = {
    "malformed": "a datagram on the UDP port that is no WireGuard message (wrong type or size)",
    "no_private_key": "a handshake message while the interface has no private key",
    "bad_source": "a handshake message from a source address that cannot be used",
    "invalid_mac": "a handshake message whose MAC1 is wrong: not for this interface's public key",
    "cookie_reply_sent": "a handshake message under load without a cookie: answered with a cookie reply",
    "ratelimited": "a handshake message under load over its source's rate limit",
    "handshake_failed": "a handshake message that did not decrypt: an unknown peer or wrong keys",
    "initiation_replay_or_flood": "a handshake initiation replayed, or sooner than 20 ms after the last",
    "cookie_reply_invalid": "a cookie reply for no handshake in progress, or that did not decrypt",
    "unknown_index": "a message for a session index this interface does not have (a stale session)",
    "expired_keypair": "a data message for a session older than 180 s (REJECT_AFTER_TIME) or zeroed",
    "decrypt_failed": "a data message that did not authenticate: forged, corrupted or the wrong key",
    "replay": "a data message whose counter was seen already or is too old for the replay window",
    "malformed_inner": "a packet that is no IPv4/IPv6 packet: read from the TUN, or decrypted",
    "inner_source_not_allowed": "a decrypted packet whose source address is not in its peer's AllowedIPs",
    "no_route": "a packet from the TUN whose destination is in no peer's AllowedIPs",
    "no_endpoint": "a packet or handshake for a peer with no endpoint yet (it has not contacted us)",
    "staged_queue_full": "a packet waiting for a handshake, pushed out by newer ones (128 per peer)",
    "handshake_no_keys": "an initiation not sent: the keys give no shared secret (a low-order point)",
    "malformed_tun_frame": "a frame from the TUN whose offload header does not match its packet",
    "tun_gso_segment_too_small": "a TUN super-packet in segments below the floor (TCP 472, UDP 8 bytes)",
    "tun_gso_too_many_segments": "a TUN super-packet of more segments than a 64 KiB frame allows (139)",
    "tun_write_refused": "a decrypted packet the kernel refused when written to the TUN",
}


def _run_stats(args: argparse.Namespace) -> int:
    from pywg.cli.commands import ask

    count = {key: values[-1] for key, values in ask(args.name, b"stats=1\n\n").items()}
    if count.get("errno") != "0":
        raise CommandError(f"{args.name} is not a pywg interface (it refused the stats request)")
    drops = {key.removeprefix("drop_"): n for key, n in count.items() if key.startswith("drop_") and n != "0"}
    if args.explain:
        print(f"{args.name}: dropped" + (":" if drops else " nothing"))
        for reason, n in drops.items():
            print(f"  {reason}: {n}: {DROP_REASONS.get(reason, 'no explanation known')}")
    else:
        listed = ", ".join(f"{reason}: {n}" for reason, n in drops.items())
        print(f"{args.name}: dropped {listed or 'nothing'}")
    print(f"{args.name}: {count.get('keypairs', '0')} keypairs, {count.get('indices', '0')} session indices")
    return 0


def _add_stats(subcommands: argparse._SubParsersAction) -> None:
    width = max(map(len, DROP_REASONS))
    parser = subcommands.add_parser(
        "stats",
        help="show what a running pywg interface dropped, and why",
        description=(
            "Show the counters of datagrams and packets a running pywg interface dropped, by reason "
            "(every one is also dropped by the kernel's WireGuard, which does not count them). Needs root."
        ),
        epilog="drop reasons:\n" + "\n".join(f"  {r:<{width}}  {why}" for r, why in DROP_REASONS.items()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("name", metavar="NAME", help="the UAPI name (as for `wg show`)")
    parser.add_argument("--explain", action="store_true", help="one line per reason, saying what it means")
    parser.set_defaults(run=_run_stats)


_SUBCOMMANDS: tuple[Callable[[argparse._SubParsersAction], None], ...] = (
    _add_up,
    _add_down,
    _add_reload,
    _add_stats,
    _add_genkey,
    _add_genpsk,
    _add_pubkey,
    _add_demo,
    _add_version,
)


# --------------------------------------------------------------------------------------------
# Entry point


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="A userspace WireGuard implementation.")
    parser.add_argument(
        "--version", action=_VersionAction, help="show the version and the data path, and exit"
    )
    subcommands = parser.add_subparsers(dest="command", metavar="<command>")
    for add in _SUBCOMMANDS:
        add(subcommands)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand and return its exit status (argparse's own exits included)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, usage errors: keep main() returning a status
        return exc.code if isinstance(exc.code, int) else 1
    run: Run | None = getattr(args, "run", None)
    if run is None:
        parser.print_usage(sys.stderr)
        print(f"{PROG}: choose a command; {PROG} --help lists them", file=sys.stderr)
        return 1
    try:
        status = run(args)
        sys.stdout.flush()  # inside the try: a closed pipe surfaces here, not at exit
        return status
    except CommandError as exc:
        print(f"{PROG} {args.command}: {exc}", file=sys.stderr)
        return 1
    except PermissionError as exc:  # e.g. CAP_NET_ADMIN without root, on a root-only file
        print(f"{PROG} {args.command}: {exc.filename or 'permission denied'}: needs root", file=sys.stderr)
        return 1
    except BrokenPipeError:  # the reader went away (e.g. `pywg genkey | head -c0`)
        _silence_stdout()
        return 1
    except KeyboardInterrupt:
        return 130


def _silence_stdout() -> None:
    """After EPIPE, point stdout at /dev/null so the interpreter's final flush stays quiet."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass


def userspace_main(argv: list[str] | None = None) -> int:
    """`pywg-userspace [-f] IFNAME`: a drop-in for wireguard-go (wg-quick runs it)."""
    parser = argparse.ArgumentParser(
        prog="pywg-userspace",
        description="Create TUN IFNAME, serve the WireGuard UAPI for it and run until it is deleted.",
    )
    parser.add_argument("-f", "--foreground", action="store_true", help="do not daemonize")
    parser.add_argument("interface", metavar="IFNAME")
    args = parser.parse_args(argv)
    foreground = args.foreground or os.environ.get("WG_PROCESS_FOREGROUND") == "1"
    from pywg.cli.commands import userspace

    try:
        return userspace(args.interface, foreground)
    except CommandError as exc:
        print(f"pywg-userspace: {exc}", file=sys.stderr)
        return 1
