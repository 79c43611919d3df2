"""OSErrors as users read them: one line saying what failed and why, never "[Errno N] ...".

`str()` of an OSError made with an errno reads "[Errno 2] No such file or directory: 'x'". pywg's
own OSErrors derive from `DescribedOSError`, whose message already names what failed, so their
`str()` is that message; `describe_os_error` gives the same one line for any OSError.
"""

from __future__ import annotations


class DescribedOSError(OSError):
    """An OSError whose strerror is a whole message ("network namespace 'x' does not exist")."""

    def __str__(self) -> str:
        return describe_os_error(self)


def describe_os_error(error: OSError) -> str:
    """The kernel's reason (`strerror`), after the file it concerns if there is one."""
    reason = error.strerror or (str(error.args[0]) if error.args else type(error).__name__)
    if error.filename is not None:
        return f"{error.filename}: {reason}"
    return reason
