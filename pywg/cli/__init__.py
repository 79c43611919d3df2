"""The `pywg` and `pywg-userspace` commands: the outermost adapter, over the runtime and the core.

parser.py has the parser of every subcommand and the entry points; commands.py does what acts on a
tunnel (up, down, reload, stats, pywg-userspace), and parser.py imports it only when such a
command runs. Both raise CommandError (errors.py) for a one-line message and exit status 1.
"""

from pywg.cli.errors import CommandError
from pywg.cli.parser import build_parser, main, userspace_main

__all__ = ["CommandError", "build_parser", "main", "userspace_main"]
