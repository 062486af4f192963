"""Test-only network fence for a server process under test (never imported by the project).

Python imports `sitecustomize` at start-up from its path, so a process started with this
directory first on PYTHONPATH (tests/servers.py `start_server(pythonpath=[...])`) runs with:

- every connect of an IPv4/IPv6 socket to an address that is not loopback refused;
- every DNS lookup of a name that is not a loopback name refused (an IP literal is allowed:
  resolving one is parsing, and no query leaves the machine);

and each refused attempt appended as one line to the file named by $SSRF_GUARD_LOG. A test of
the resend policy asserts that this file stays empty: the policy must refuse before touching
the network, and if it does not, the attempt is stopped here instead of leaving the machine.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
from typing import Any

LOOPBACK_NAMES = {"localhost"}
_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex
_real_getaddrinfo = socket.getaddrinfo
_real_gethostbyname = socket.gethostbyname
_real_gethostbyname_ex = socket.gethostbyname_ex


def _record(what: str) -> None:
    path = os.environ.get("SSRF_GUARD_LOG")
    if path:
        with open(path, "a", encoding="utf-8") as log:
            log.write(what + "\n")


def _is_loopback(host: Any) -> bool:
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    try:
        return ipaddress.ip_address(str(host)).is_loopback
    except ValueError:
        return False


def _name_allowed(host: Any) -> bool:
    """A lookup that stays on the machine: none, an IP literal, or a loopback name."""
    if host is None:
        return True
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return host.lower().rstrip(".") in LOOPBACK_NAMES


def _connect_allowed(sock: socket.socket, address: Any) -> bool:
    if sock.family not in (socket.AF_INET, socket.AF_INET6):
        return True  # Unix sockets and the like never leave the machine
    return isinstance(address, tuple) and _is_loopback(address[0])


def connect(self: socket.socket, address: Any) -> None:
    if not _connect_allowed(self, address):
        _record(f"connect {address!r}")
        raise PermissionError(errno.EACCES, f"test guard: connect to {address!r} refused")
    return _real_connect(self, address)


def connect_ex(self: socket.socket, address: Any) -> int:
    if not _connect_allowed(self, address):
        _record(f"connect_ex {address!r}")
        return errno.EACCES
    return _real_connect_ex(self, address)


def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
    if not _name_allowed(host):
        _record(f"getaddrinfo {host!r}")
        raise socket.gaierror(socket.EAI_NONAME, f"test guard: lookup of {host!r} refused")
    return _real_getaddrinfo(host, *args, **kwargs)


def gethostbyname(host: str) -> str:
    if not _name_allowed(host):
        _record(f"gethostbyname {host!r}")
        raise socket.gaierror(socket.EAI_NONAME, f"test guard: lookup of {host!r} refused")
    return _real_gethostbyname(host)


def gethostbyname_ex(host: str) -> Any:
    if not _name_allowed(host):
        _record(f"gethostbyname_ex {host!r}")
        raise socket.gaierror(socket.EAI_NONAME, f"test guard: lookup of {host!r} refused")
    return _real_gethostbyname_ex(host)


# socket.create_connection resolves with socket.getaddrinfo and connects with sock.connect,
# and asyncio's loop does the same (looked up at call time), so these cover them all.
socket.socket.connect = connect  # type: ignore[method-assign]
socket.socket.connect_ex = connect_ex  # type: ignore[method-assign]
socket.getaddrinfo = getaddrinfo
socket.gethostbyname = gethostbyname
socket.gethostbyname_ex = gethostbyname_ex
