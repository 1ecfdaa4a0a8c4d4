"""The Ray cluster a corpus job or `serve --ray` joins: its address checked before ray.init, which retries an
address nothing answers at forever (a warning every few seconds, never an error)."""

from __future__ import annotations

import socket

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
