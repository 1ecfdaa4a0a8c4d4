"""Joining the Ray cluster a corpus job or `serve --ray` runs on: its address checked before ray.init (which retries
an address nothing answers at forever, a warning every few seconds, never an error), and this process's SIGTERM
handler kept (Ray's core installs its own, which aborts the process with a C++ stack dump)."""

from __future__ import annotations

import signal
import socket
import threading

CONNECT_TIMEOUT_S = 10   # a head that takes no TCP connection within this is refused


def check_address(address: str | None) -> None:
    """A head's HOST:PORT or ray://HOST:PORT that takes no TCP connection is a ConnectionError naming it (ray.init
    retries such an address forever, printing a warning every few seconds). None and "auto" are Ray's to find."""
    if address is None or address == "auto":
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        return                                      # not HOST:PORT: Ray's own message says what it takes
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as e:
        raise ConnectionError(f"no Ray cluster answers at {address!r} ({e.strerror or e}); check the head's address "
                              "and port (`ray status` on the head), or leave the address out for a local Ray") from None


def join(ray, address: str | None) -> None:
    """ray.init on `address` (None: a local Ray instance, no dashboard; "auto" / HOST:PORT / "ray://...": that
    cluster), checked first, this process's SIGTERM handler kept."""
    check_address(address)
    handler = signal.getsignal(signal.SIGTERM)
    try:
        ray.init(address=address, **({"include_dashboard": False} if address is None else {}))
    except ConnectionError:
        if address != "auto":
            raise
        raise ConnectionError("no running Ray cluster found for address 'auto' (none started on this machine with "
                              "`ray start --head`, no RAY_ADDRESS); start one, pass the head's address, or leave the "
                              "address out for a local Ray") from None
    if handler is not None and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, handler)
