"""The cross-platform configuration protocol (https://www.wireguard.com/xplatform/), without I/O.

This is what `wg` speaks to a userspace implementation over
``/var/run/wireguard/<name>.sock``. A request is ``get=1`` or ``set=1`` followed by
``key=value`` lines and ends at the first empty line; the reply is ``key=value`` lines (for
get) and ``errno=N`` then an empty line. `handle_request` answers one complete request;
`RequestSplitter` cuts a byte stream into requests; `UapiSession` does both for one
connection. The socket itself belongs to the runtime.

Behaviour follows wireguard-go's ``device/uapi.go`` (the reference `wg` is tested against):

* get prints ``private_key`` only when set, ``listen_port`` and ``fwmark`` only when nonzero,
  and for every peer ``public_key``, ``preshared_key`` (all zeros when there is none),
  ``protocol_version=1``, ``endpoint`` when known, ``last_handshake_time_sec``/``_nsec``
  (Unix time; 0 and 0 when there never was one), ``tx_bytes``, ``rx_bytes``,
  ``persistent_keepalive_interval`` and one ``allowed_ip`` line per prefix.
* set applies its lines in order and stops at the first bad one; what came before stays
  applied. A ``public_key`` line starts a peer section and creates the peer unless the
  section says ``update_only=true``. A section for our own public key is read and
  ignored. Turning a persistent keepalive on sends a keepalive when the section ends.
* Failures are negative errno values: -EPROTO for a line without "=", -EINVAL for an
  unknown key or a bad value, -EADDRINUSE when the runtime cannot apply a listen port or
  fwmark, -EIO for a line too long to buffer, and -55 for anything unexpected.

Besides what Debian 12's wireguard-go 0.0.20220316 accepts, ``allowed_ip=-PREFIX`` removes
one prefix from the peer (wireguard-go 0.0.20250515 and later).

Nothing here logs or raises values taken from a request: a mistyped key must not reach a log.
"""

from __future__ import annotations

import errno
import gc
import logging
import re
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import AddressValueError, IPv4Address, IPv4Network, IPv6Address, IPv6Network

from pywg.core.constants import KEY_LEN
from pywg.core.crypto import clamp
from pywg.core.device import Device
from pywg.core.endpoint import Endpoint, format_endpoint
from pywg.core.keys import KeyFormatError, key_from_hex, key_to_hex
from pywg.core.peer import Peer

__all__ = [
    "MAX_LINE",
    "ReloadRefused",
    "RequestSplitter",
    "UapiHooks",
    "UapiSession",
    "handle_request",
]

log = logging.getLogger(__name__)

# Negative errno values, as wireguard-go's ipc/uapi_unix.go sends them.
ERROR_IO = -errno.EIO
ERROR_PROTOCOL = -errno.EPROTO
ERROR_INVALID = -errno.EINVAL
ERROR_PORT_IN_USE = -errno.EADDRINUSE
ERROR_UNKNOWN = -55  # ENOANO on Linux; wireguard-go's code for "other UAPI error"

# The longest line wireguard-go's bufio.Scanner reads (bufio.MaxScanTokenSize).
MAX_LINE = 64 * 1024

MAX_PORT = 0xFFFF
MAX_FWMARK = 0xFFFF_FFFF
MAX_KEEPALIVE = 0xFFFF
_ZERO_KEY = bytes(KEY_LEN)
_OK = b"errno=0\n\n"


def _reply(code: int) -> bytes:
    return b"errno=%d\n\n" % code


class _Failure(Exception):
    """Stops a request. `reason` is fixed text: it never contains request values."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def _accept_port(port: int) -> int | None:
    return None


def _accept_fwmark(mark: int) -> None:
    return None


def _nothing() -> None:
    return None


class ReloadRefused(Exception):
    """The runtime did not reload; the message is one line for the user, never key material."""


def _no_reload() -> tuple[str, list[str]]:
    raise ReloadRefused("it has no configuration file to reread (only `pywg up` tunnels have one)")


@dataclass
class UapiHooks:
    """What the runtime does for the UAPI; the defaults let a bare Device be configured.

    set_listen_port(port) rebinds the UDP socket (0: any port) and returns the port now in
    use (None: `port` itself); an OSError becomes -EADDRINUSE. It is called for every
    listen_port line, changed or not, as wireguard-go rebinds on each one. set_fwmark(mark)
    sets SO_MARK on the sockets (0 clears it); an OSError becomes -EADDRINUSE, as in
    wireguard-go. On success the value is also stored in `device.listen_port` /
    `device.fwmark`; on failure those keep their old value.

    before_get() runs before a get is answered, so a runtime can fold counters it keeps
    elsewhere (the C hot path) into `peer.rx_bytes`/`peer.tx_bytes`. after_set() runs after
    every set, successful or not (a failed set may have applied its first lines), so the
    runtime can push the new configuration on and look at `device.outbox` and
    `device.next_deadline()` again.

    reload() rereads the runtime's configuration file and applies it (`pywg reload`); it returns
    one line saying what is running now and the warnings about the file, or raises ReloadRefused.
    """

    set_listen_port: Callable[[int], int | None] = _accept_port
    set_fwmark: Callable[[int], None] = _accept_fwmark
    before_get: Callable[[], None] = _nothing
    after_set: Callable[[], None] = _nothing
    reload: Callable[[], tuple[str, list[str]]] = _no_reload


# --------------------------------------------------------------------------------------------
# One request


def handle_request(device: Device, request: bytes | str, hooks: UapiHooks | None = None) -> bytes:
    """Answer one complete request (``get=1`` or ``set=1`` lines through the first empty line).

    Never raises: every failure, including bugs, becomes an ``errno=-N`` reply.
    """
    hooks = hooks if hooks is not None else UapiHooks()
    try:
        text = request.decode("latin-1") if isinstance(request, bytes | bytearray) else str(request)
        if text == "\n":
            raise _Failure(ERROR_INVALID, "empty operation line")
        end = text.find("\n\n")
        if end < 0 or end + 2 != len(text) or text[0] == "\n":
            raise _Failure(ERROR_PROTOCOL, "a request is lines ending with one empty line")
        operation, _, body = text[: end + 1].partition("\n")
        if operation == "get=1":
            if body:
                raise _Failure(ERROR_INVALID, "trailing lines after get=1")
            return _get(device, hooks)
        if operation == "set=1":
            return _set(device, body, hooks)
        if operation == "stats=1" and not body:
            return _stats(device)
        if operation == "reload=1" and not body:
            return _reload(hooks)
        raise _Failure(ERROR_INVALID, "unknown operation (expected get=1 or set=1)")
    except _Failure as failure:
        log.info("UAPI request refused: %s", failure.reason)
        return _reply(failure.code)
    except Exception as exc:  # a bug: answer, and log where without any values
        _log_bug("request", exc)
        return _reply(ERROR_UNKNOWN)


def _stats(device: Device) -> bytes:
    """pywg's own operation (`pywg stats`): datagrams and packets dropped, by reason, then the
    number of live session indices and keypairs (for leak checks, benchmarks/soak.py).

    wg never sends it; it answers in the same key=value form as get.
    """
    lines = [f"drop_{reason}={count}\n" for reason, count in sorted(device.drops.items())]
    keypairs = sum(len(peer.keypairs.all()) for peer in device.peers.values())
    lines.append(f"indices={len(device.indices)}\nkeypairs={keypairs}\n")
    return ("".join(lines) + "errno=0\n\n").encode()


def _reload(hooks: UapiHooks) -> bytes:
    """pywg's own operation (`pywg reload`): the runtime rereads its configuration file. The reply
    has a `reloaded=` line (what runs now) and a `warning=` line per warning, or an `error=` line
    (the running configuration stays), then errno; wg never sends it."""
    try:
        summary, warnings = hooks.reload()
    except ReloadRefused as refusal:
        return f"error={_one_line(str(refusal))}\nerrno={ERROR_INVALID}\n\n".encode()
    lines = [f"warning={_one_line(warning)}\n" for warning in warnings]
    return ("".join(lines) + f"reloaded={_one_line(summary)}\n" + "errno=0\n\n").encode()


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _log_bug(where: str, exc: BaseException) -> None:
    frames = "".join(traceback.format_list(traceback.extract_tb(exc.__traceback__)))
    log.error("UAPI %s failed with %s (message withheld)\n%s", where, type(exc).__name__, frames)


# --------------------------------------------------------------------------------------------
# get


def _get(device: Device, hooks: UapiHooks) -> bytes:
    try:
        hooks.before_get()
    except Exception as exc:
        _log_bug("before_get hook", exc)
        return _reply(ERROR_UNKNOWN)
    lines: list[str] = []
    add = lines.append
    static = device.static
    if static is not None:
        add(f"private_key={key_to_hex(static.private_bytes)}")
    if device.listen_port:
        add(f"listen_port={device.listen_port}")
    if device.fwmark:
        add(f"fwmark={device.fwmark}")
    entries_for = device.allowed_ips.entries_for
    for peer in device.peers.values():
        add(f"public_key={key_to_hex(peer.public_key)}")
        add(f"preshared_key={key_to_hex(peer.preshared_key or _ZERO_KEY)}")
        add("protocol_version=1")
        if peer.endpoint is not None:
            add(f"endpoint={format_endpoint(peer.endpoint)}")
        seconds, nanoseconds = divmod(peer.last_handshake_ns, 1_000_000_000)
        add(f"last_handshake_time_sec={seconds}")
        add(f"last_handshake_time_nsec={nanoseconds}")
        add(f"tx_bytes={peer.tx_bytes}")
        add(f"rx_bytes={peer.rx_bytes}")
        add(f"persistent_keepalive_interval={peer.persistent_keepalive}")
        lines += [f"allowed_ip={_format_network(net)}" for net in entries_for(peer)]
    add("errno=0\n\n")
    return "\n".join(lines).encode("ascii")


_DECIMAL = [str(i) for i in range(256)]


def _format_network(network: IPv4Network | IPv6Network) -> str:
    """As Go's netip.Prefix.String (what wireguard-go prints): RFC 5952 text for IPv6, and an
    IPv4-mapped IPv6 address keeps its dotted tail. Faster than str() on a network, which a
    get with 150,000 prefixes notices."""
    number = int(network.network_address)
    if network.version == 4:
        return f"{_ipv4_text(number)}/{network.prefixlen}"
    return f"{_ipv6_text(number)}/{network.prefixlen}"


def _ipv4_text(number: int) -> str:
    d = _DECIMAL
    return f"{d[number >> 24]}.{d[number >> 16 & 255]}.{d[number >> 8 & 255]}.{d[number & 255]}"


def _ipv6_text(number: int) -> str:
    if number >> 32 == 0xFFFF:
        return "::ffff:" + _ipv4_text(number & 0xFFFF_FFFF)
    words = [number >> shift & 0xFFFF for shift in range(112, -1, -16)]
    # The longest run of two or more zero words becomes "::"; the first one on a tie.
    best, best_length, run = -1, 1, -1
    for index, word in enumerate(words):
        if word:
            run = -1
            continue
        if run < 0:
            run = index
        if index - run + 1 > best_length:
            best, best_length = run, index - run + 1
    if best < 0:
        return ":".join([f"{word:x}" for word in words])
    head = ":".join([f"{word:x}" for word in words[:best]])
    tail = ":".join([f"{word:x}" for word in words[best + best_length :]])
    return f"{head}::{tail}"


# --------------------------------------------------------------------------------------------
# set


def _set(device: Device, body: str, hooks: UapiHooks) -> bytes:
    operation = _SetOperation(device, hooks)
    # A big set allocates hundreds of thousands of network objects that all live on; the
    # cyclic collector would rescan them again and again (a third of the time for 150,000
    # allowed IPs). Nothing here makes cycles, so it rests until the set is done.
    collecting = gc.isenabled()
    gc.disable()
    try:
        operation.run(body)
        reply = _OK
    except _Failure as failure:
        where = f"line {operation.line_number}" + (f" ({operation.key})" if operation.key else "")
        log.info("UAPI set stopped at %s: %s", where, failure.reason)
        reply = _reply(failure.code)
    except Exception as exc:
        _log_bug("set", exc)
        reply = _reply(ERROR_UNKNOWN)
    finally:
        if collecting:
            gc.enable()
    try:
        hooks.after_set()
    except Exception as exc:
        _log_bug("after_set hook", exc)
        reply = _reply(ERROR_UNKNOWN) if reply == _OK else reply
    return reply


_KNOWN_KEYS = frozenset(
    {
        "private_key",
        "listen_port",
        "fwmark",
        "replace_peers",
        "public_key",
        "remove",
        "update_only",
        "preshared_key",
        "endpoint",
        "persistent_keepalive_interval",
        "replace_allowed_ips",
        "allowed_ip",
        "protocol_version",
    }
)


class _SetOperation:
    """The state of one set: which section we are in and the peer being configured.

    As in wireguard-go, a peer section whose peer is gone or must not exist (removed,
    update_only on a peer we just created, our own public key) is a "dummy": its lines are
    still checked, but change nothing.
    """

    def __init__(self, device: Device, hooks: UapiHooks) -> None:
        self.device = device
        self.hooks = hooks
        self.in_peer_section = False
        self.peer: Peer | None = None  # None in a dummy section
        self.created = False
        self.keepalive_on: int | None = None  # interval turned on from 0 in this section
        self.line_number = 0
        self.key = ""
        self.device_keys: dict[str, Callable[[str], None]] = {
            "private_key": self.private_key,
            "listen_port": self.listen_port,
            "fwmark": self.fwmark,
            "replace_peers": self.replace_peers,
        }
        self.peer_keys: dict[str, Callable[[str], None]] = {
            "allowed_ip": self.allowed_ip,
            "remove": self.remove,
            "update_only": self.update_only,
            "preshared_key": self.preshared_key,
            "endpoint": self.endpoint,
            "persistent_keepalive_interval": self.persistent_keepalive_interval,
            "replace_allowed_ips": self.replace_allowed_ips,
            "protocol_version": self.protocol_version,
        }

    def run(self, body: str) -> None:
        lines = body.split("\n")
        lines.pop()  # the body ends with "\n"
        handlers = self.device_keys
        for number, line in enumerate(lines, 1):
            key, sep, value = line.partition("=")
            if not sep:
                self.line_number, self.key = number, ""
                raise _Failure(ERROR_PROTOCOL, "a line without '='")
            if key == "public_key":
                self.line_number, self.key = number, key
                self.end_peer_section()
                self.public_key(value)
                handlers = self.peer_keys
                continue
            handler = handlers.get(key)
            if handler is None:
                self.line_number, self.key = number, key if key in _KNOWN_KEYS else ""
                section = "peer" if self.in_peer_section else "device"
                raise _Failure(ERROR_INVALID, f"not a {section} key")
            try:
                handler(value)
            except _Failure:
                self.line_number, self.key = number, key
                raise
        self.end_peer_section()

    # Device section.
    def private_key(self, value: str) -> None:
        key = _key(value)
        self.device.set_private_key(None if key == _ZERO_KEY else clamp(key))

    def listen_port(self, value: str) -> None:
        port = _number(value, MAX_PORT)
        try:
            bound = self.hooks.set_listen_port(port)
        except OSError:
            raise _Failure(ERROR_PORT_IN_USE, "the runtime could not bind the listen port") from None
        self.device.listen_port = port if bound is None else bound

    def fwmark(self, value: str) -> None:
        mark = _number(value, MAX_FWMARK)
        try:
            self.hooks.set_fwmark(mark)
        except OSError:
            raise _Failure(ERROR_PORT_IN_USE, "the runtime could not set the fwmark") from None
        self.device.fwmark = mark

    def replace_peers(self, value: str) -> None:
        _true(value)
        self.device.clear_peers()

    # Peer sections.
    def public_key(self, value: str) -> None:
        public = _key(value)
        device = self.device
        self.in_peer_section = True
        self.created = False
        self.keepalive_on = None
        if public == device.public_key:
            self.peer = None  # our own key: read the section, change nothing
            return
        peer = device.peers.get(public)
        if peer is None:
            try:
                peer = device.add_peer(public)
            except ValueError:
                raise _Failure(ERROR_INVALID, "cannot create the peer (too many peers?)") from None
            self.created = True
        self.peer = peer

    def end_peer_section(self) -> None:
        """Send the keepalive a section asked for by turning the interval on (go: handlePostConfig)."""
        peer, interval = self.peer, self.keepalive_on
        self.keepalive_on = None
        if peer is not None and interval is not None:
            peer.set_persistent_keepalive(interval, self.device.clock.monotonic())

    def remove(self, value: str) -> None:
        _true(value)
        if self.peer is not None:
            self.device.remove_peer(self.peer.public_key)
        self.peer = None
        self.keepalive_on = None

    def update_only(self, value: str) -> None:
        _true(value)
        if self.created and self.peer is not None:
            self.device.remove_peer(self.peer.public_key)
            self.peer = None
            self.keepalive_on = None

    def preshared_key(self, value: str) -> None:
        key = _key(value)
        if self.peer is not None:
            self.peer.preshared_key = None if key == _ZERO_KEY else key

    def endpoint(self, value: str) -> None:
        endpoint = _endpoint(value)
        peer = self.peer
        if peer is not None:
            peer.set_endpoint(endpoint)
            peer.endpoint_source = None  # a configured endpoint starts without a sticky source

    def persistent_keepalive_interval(self, value: str) -> None:
        interval = _number(value, MAX_KEEPALIVE)
        peer = self.peer
        if peer is None:
            return
        if interval and not peer.persistent_keepalive:
            # 0 -> n: store it when the section ends, which also sends the first keepalive.
            self.keepalive_on = interval
            return
        self.keepalive_on = None
        peer.set_persistent_keepalive(interval, self.device.clock.monotonic())

    def replace_allowed_ips(self, value: str) -> None:
        _true(value)
        if self.peer is not None:
            self.device.allowed_ips.remove_peer(self.peer)

    def allowed_ip(self, value: str) -> None:
        removing = value.startswith("-")
        network = _prefix(value[1:] if removing else value)
        peer = self.peer
        if peer is None:
            return
        if removing:
            self.device.allowed_ips.remove(network, peer)
        else:
            self.device.allowed_ips.insert(network, peer)

    def protocol_version(self, value: str) -> None:
        if value != "1":
            raise _Failure(ERROR_INVALID, "protocol_version must be 1")


# --------------------------------------------------------------------------------------------
# Values


def _key(value: str) -> bytes:
    try:
        return key_from_hex(value)
    except KeyFormatError:
        raise _Failure(ERROR_INVALID, "a key is 64 hex digits") from None


def _number(value: str, maximum: int) -> int:
    """Decimal digits only, as Go's strconv.ParseUint(value, 10, bits): no sign, no spaces."""
    if not (0 < len(value) <= 20 and value.isascii() and value.isdigit()):
        raise _Failure(ERROR_INVALID, "not a decimal number")
    number = int(value)
    if number > maximum:
        raise _Failure(ERROR_INVALID, f"number above {maximum}")
    return number


def _true(value: str) -> None:
    if value != "true":
        raise _Failure(ERROR_INVALID, "the only value allowed is true")


def _endpoint(value: str) -> Endpoint:
    """``IPv4:port`` or ``[IPv6]:port`` (a zone allowed), as Go's netip.ParseAddrPort; no names."""
    host, sep, port_text = value.rpartition(":")
    if not sep:
        raise _Failure(ERROR_INVALID, "an endpoint is IP:port or [IPv6]:port")
    bracketed = len(host) >= 2 and host[0] == "[" and host[-1] == "]"
    try:
        if bracketed:
            address: IPv4Address | IPv6Address = IPv6Address(host[1:-1])
        else:
            address = IPv4Address(host)
    except (AddressValueError, ValueError):
        raise _Failure(ERROR_INVALID, "an endpoint is IP:port or [IPv6]:port, with a numeric IP") from None
    scope = address.scope_id if isinstance(address, IPv6Address) else None
    if scope is not None and not _ZONE.fullmatch(scope):
        raise _Failure(ERROR_INVALID, "an IPv6 zone is an interface name or index")
    port = _number(port_text, MAX_PORT)
    return _address_text(address), port


# What an interface name or index can look like (Linux dev_valid_name, IFNAMSIZ): printable
# ASCII (get answers in ASCII), and nothing that would make the "[address%zone]:port" text
# ambiguous to wg's parser.
_ZONE = re.compile(r"(?:(?![\[\]/:%=])[!-~]){1,15}")


def _address_text(address: IPv4Address | IPv6Address) -> str:
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        scope = address.scope_id
        return f"::ffff:{address.ipv4_mapped}" + (f"%{scope}" if scope else "")
    return str(address)


# Lookup tables: a dict probe both parses and validates (no sign, space or leading zero).
_OCTETS = {str(i): i for i in range(256)}
_PREFIX_LENGTHS = {str(i): i for i in range(129)}
_V4_MASKS = [(0xFFFF_FFFF << (32 - bits)) & 0xFFFF_FFFF for bits in range(33)]
_V6_MASKS = [((1 << 128) - 1) ^ ((1 << (128 - bits)) - 1) for bits in range(129)]


def _prefix(value: str) -> IPv4Network | IPv6Network:
    """``IP/bits`` as Go's netip.ParsePrefix: host bits may be set (they are ignored), no zone."""
    address, _, bits_text = value.partition("/")
    bits = _PREFIX_LENGTHS.get(bits_text)
    if bits is None:  # no sign or leading zero, as current Go (Go 1.19 let "+24" and "024" by)
        raise _Failure(ERROR_INVALID, "an allowed IP is IP/prefix-length")
    octets = address.split(".")
    if len(octets) == 4 and ":" not in address:
        o = _OCTETS
        try:
            number = o[octets[0]] << 24 | o[octets[1]] << 16 | o[octets[2]] << 8 | o[octets[3]]
        except KeyError:
            raise _Failure(ERROR_INVALID, "not an IPv4 address") from None
        if bits > 32:
            raise _Failure(ERROR_INVALID, "an IPv4 prefix length is at most 32")
        return IPv4Network((number & _V4_MASKS[bits], bits))
    if ":" not in address or "%" in address:
        raise _Failure(ERROR_INVALID, "not an IP address (zones are not allowed)")
    try:
        number = int(IPv6Address(address))
    except (AddressValueError, ValueError):
        raise _Failure(ERROR_INVALID, "not an IPv6 address") from None
    return IPv6Network((number & _V6_MASKS[bits], bits))


# --------------------------------------------------------------------------------------------
# Streams


class RequestSplitter:
    """Cuts a byte stream into requests: each ends at its first empty line.

    `feed` returns the requests completed so far, in order, each with its closing empty
    line; partial data waits for the next chunk. A partial line longer than `max_line` sets
    `overflowed` (wireguard-go's scanner gives up there too); from then on nothing more is
    returned and the connection should be answered with -EIO and closed.
    """

    def __init__(self, max_line: int = MAX_LINE) -> None:
        self.max_line = max_line
        self.overflowed = False
        self._buffer = bytearray()
        self._searched = 0  # bytes of the buffer known to hold no end of request

    @property
    def pending(self) -> int:
        """Bytes of an unfinished request held back."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[bytes]:
        if self.overflowed:
            return []
        buffer = self._buffer
        buffer += data
        requests: list[bytes] = []
        start = 0
        while start < len(buffer):
            if buffer[start] == 0x0A:  # an empty first line ends the request at once
                end = start + 1
            else:
                found = buffer.find(b"\n\n", max(start, self._searched - 1))
                if found < 0:
                    break
                end = found + 2
            requests.append(bytes(buffer[start:end]))
            start = end
        if start:
            del buffer[:start]
        self._searched = len(buffer)
        if len(buffer) - (buffer.rfind(b"\n") + 1) > self.max_line:
            self.overflowed = True
            buffer.clear()
        return requests


class UapiSession:
    """One UAPI connection: feed it what the socket reads, write back what it returns.

    After a reply, check `closed`: a line too long to buffer ends the connection.
    """

    def __init__(self, device: Device, hooks: UapiHooks | None = None, *, max_line: int = MAX_LINE) -> None:
        self.device = device
        self.hooks = hooks if hooks is not None else UapiHooks()
        self.splitter = RequestSplitter(max_line)
        self.closed = False

    def feed(self, data: bytes) -> bytes:
        if self.closed:
            return b""
        replies = [handle_request(self.device, request, self.hooks) for request in self.splitter.feed(data)]
        if self.splitter.overflowed:
            log.info("UAPI connection closed: a line longer than %d bytes", self.splitter.max_line)
            replies.append(_reply(ERROR_IO))
            self.closed = True
        return b"".join(replies)
