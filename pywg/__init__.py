"""pywg: a userspace WireGuard data plane."""

__version__ = "0.1.0"
