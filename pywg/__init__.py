"""pywg: a userspace WireGuard data plane.

One package per boundary, dependencies pointing inward: `pywg.core` is the sans-I/O protocol;
`pywg.config` the configuration formats; `pywg.native` the C hot path; `pywg.runtime` the adapters
that touch the OS (TUN, UDP, netlink, the asyncio engine); `pywg.cli` the commands.
docs/design.md has the layout and a packet's way through it.
"""

__version__ = "0.1.0"
