"""The sans-I/O WireGuard protocol core: no sockets, TUN, clock or randomness of its own.

An adapter (the asyncio runtime, the node agent, a test) makes a `Device` with a `Clock`, a random
source and a `Crypto` for data messages (`PythonCrypto`, or the C hot path of pywg.native), then
feeds it batches: the datagrams of a read of the UDP side, the IP packets of a read of the TUN side
(pywg/core/batch.py), and drains what comes out: runs of messages to send, opened runs to deliver,
events (pywg/core/events.py) and the next deadline.
`UapiSession` answers `wg`'s configuration protocol for a device; key text goes through the
functions of pywg/core/keys.py.

One concern per module, named as in the kernel's drivers/net/wireguard: wire formats and constants
(messages, constants), primitives (crypto), the handshake (noise), cookies and MACs (cookie), the
replay window (replay), cryptokey routing (allowedips), the handshake rate limit (ratelimiter),
sessions (keypair), timers, peers (peer), the device (device), data messages and the injected crypto
(transport), batches as the device sees them (batch), the configuration protocol (uapi), key text
(keys), TAI64N (tai64n), the injected clock (clock) and endpoints (endpoint). Those are for the
adapters that implement the core's interfaces (pywg.native implements `Crypto` and the batch
protocols) and for tests; the names below are the API every adapter drives.
"""

from pywg.core.clock import Clock, FakeClock
from pywg.core.device import Device, Outgoing
from pywg.core.endpoint import Endpoint, format_endpoint
from pywg.core.events import EndpointChanged, Event, HandshakeCompleted, HandshakeGaveUp, KeysZeroed
from pywg.core.keys import (
    KeyFormatError,
    decode_key,
    encode_key,
    generate_preshared_key,
    generate_private_key,
    public_key_for,
)
from pywg.core.peer import Peer
from pywg.core.transport import Crypto, PythonCrypto
from pywg.core.uapi import ReloadRefused, UapiHooks, UapiSession

__all__ = [
    "Clock",
    "Crypto",
    "Device",
    "Endpoint",
    "EndpointChanged",
    "Event",
    "FakeClock",
    "HandshakeCompleted",
    "HandshakeGaveUp",
    "KeyFormatError",
    "KeysZeroed",
    "Outgoing",
    "Peer",
    "PythonCrypto",
    "ReloadRefused",
    "UapiHooks",
    "UapiSession",
    "decode_key",
    "encode_key",
    "format_endpoint",
    "generate_preshared_key",
    "generate_private_key",
    "public_key_for",
]
