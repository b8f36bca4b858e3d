"""What keeps a server from starting, said in one line that names the option to change.

A taken port, a host that is no address here, a data directory that cannot be used or
a missing extra would otherwise end start-up in a traceback. They raise `StartupError`
instead, which the CLI prints as one line naming the flag or variable, exit status 1.

One server per port. `--workers` binds its port with SO_REUSEPORT, and a second server
doing the same would join the first one's group unnoticed: the kernel would then split
connections between two unrelated servers. So a server claims its port first: a probe
bound *without* SO_REUSEPORT fails if anything listens there, in such a group or not; and
a lock named after the address (an abstract Unix socket, gone with its process) is held
from then until the server exits, so two PushUp servers starting at once cannot both get
past the probe before either listens.
"""

from __future__ import annotations

import errno
import os
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path


class StartupError(Exception):
    """Serving cannot start: the option `field`, set to `value`, `problem`."""

    def __init__(self, field: str, value: object, problem: str) -> None:
        super().__init__(f"{field} {value} {problem}")
        self.field = field
        self.value = str(value)
        self.problem = problem


def in_use(host: str, port: int) -> StartupError:
    return StartupError("port", port, f"is in use on {host} (another server listens there)")


def bind(host: str, port: int, *, reuseport: bool) -> socket.socket:
    """A TCP socket bound to host:port, not yet listening; `reuseport` for a worker of
    `--workers`. Raises StartupError naming --host or --port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        # Connections a previous server left in TIME_WAIT must not keep the port.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuseport:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise _bind_error(exc, host, port) from None
    return sock


def _bind_error(exc: OSError, host: str, port: int) -> StartupError:
    if isinstance(exc, socket.gaierror):
        return StartupError("host", host, f"is not a known host name ({exc.strerror})")
    if exc.errno == errno.EADDRINUSE:
        return in_use(host, port)
    if exc.errno == errno.EADDRNOTAVAIL:
        return StartupError("host", host, f"is no address of this machine ({exc.strerror})")
    return StartupError("port", port, f"cannot be bound on {host} ({exc.strerror})")


def inherited(fd: int) -> socket.socket:
    """The socket `--fd` names, handed over bound (by systemd, say, or a test)."""
    try:
        return socket.socket(fileno=fd)
    except OSError as exc:
        raise StartupError("fd", fd, f"is not an open socket ({exc.strerror})") from None


@dataclass
class Claim:
    """A port claimed by this server: its bound socket and the lock on its address."""

    sock: socket.socket
    port: int
    _lock: socket.socket

    def release(self) -> None:
        """Let go of the lock (the socket is closed by whoever listens on it)."""
        self._lock.close()


def claim(host: str, port: int, *, shared: bool) -> Claim:
    """Bind host:port (port 0: a free one) for this server alone, or fail in one line.

    `shared`: bound with SO_REUSEPORT, as a reservation the workers bind beside; it
    would share the port with any such group of this user, so a probe without it
    checks that nothing listens there yet."""
    sock = bind(host, port, reuseport=shared)
    lock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        address, port = sock.getsockname()[:2]
        try:
            lock.bind(f"\0pushup {address} {port}".encode())
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise in_use(host, port) from None
            raise
        if shared:
            # The reservation neither listens nor lacks SO_REUSEADDR: the probe
            # passes it, and fails on any listener.
            bind(address, port, reuseport=False).close()
    except BaseException:
        lock.close()
        sock.close()
        raise
    return Claim(sock, port, lock)


def check_data_dir(path: Path) -> None:
    """Make the data directory if need be, and check that a file can be made in it:
    the journal would fail on either, with a less precise reason."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise StartupError("data_dir", path, "is not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StartupError("data_dir", path, f"cannot be made ({exc.strerror})") from None
    try:
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        raise StartupError("data_dir", path, f"is not writable ({exc.strerror})") from None


def missing_extra(field: str, value: object, exc: ImportError, extra: str) -> StartupError:
    """An option's value needs an extra that is not installed."""
    return StartupError(
        field,
        value,
        f"needs the {extra} extra ({exc.name} is missing): pip install 'pushup[{extra}]'",
    )
