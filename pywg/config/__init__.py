"""Interface configuration: the model, and its two formats, wg-quick INI and wireguard-cni JSON.

`parse_config` tells the formats apart by content (JSON starts with ``{``); `load_config` reads a
file. Each format has its module: `cni_json` (the ``config.json`` that users of the CNI plugin keep
in a Kubernetes Secret) and `wg_quick` (INI). The rules for single values (keys, addresses,
endpoints, durations, ...) and the checks across fields are shared, in `fields`; `model` holds what
both parse into; `emit` writes a configuration out again in either format.

A configuration without an address is refused with ``require_address`` (the CNI's case: a Pod's
interface needs one) and otherwise warned about, saying what follows.

This package is pure: it opens no sockets and resolves no names (an endpoint keeps its host name;
the runtime resolves it). `load_config` is the only function that touches a file.

Every error is a `ConfigError` whose message starts with where the problem is: a JSON path
(``peers[0].allowedIPs[1]: ...``) or an INI line and key (``line 9: [Peer] #2 AllowedIPs: ...``).
Messages never contain key material: key fields are never echoed, and any other echoed value that
looks like a key is hidden.
"""

from pywg.config.emit import format_wg_quick, to_json
from pywg.config.fields import parse_address, parse_allowed_ip, parse_endpoint, parse_fwmark, parse_keepalive
from pywg.config.load import load_config, parse_config
from pywg.config.model import ConfigError, EndpointSpec, InterfaceConfig, PeerConfig

__all__ = [
    "ConfigError",
    "EndpointSpec",
    "InterfaceConfig",
    "PeerConfig",
    "format_wg_quick",
    "load_config",
    "parse_address",
    "parse_allowed_ip",
    "parse_config",
    "parse_endpoint",
    "parse_fwmark",
    "parse_keepalive",
    "to_json",
]
