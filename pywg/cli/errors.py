"""The error of every command: the parser (parser.py) and the tunnel commands (commands.py) raise it."""


class CommandError(Exception):
    """A failure to report as one line on stderr, with exit status 1."""
