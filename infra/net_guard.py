"""Which network addresses a server-side fetch or delivery may reach (the SSRF guard's address checks).

Shared by `url` inputs (deployments/http/url_inputs.py) and webhook deliveries (deployments/webhooks.py):
an address is public when it is globally routable and not in a range that reaches other networks' hosts
(NAT64, 6to4, Teredo, IPv4-mapped). A caller resolves the host once, checks every address, and connects
to the address it checked (`pinned_url`), so a second lookup cannot rebind the name elsewhere.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit, urlunsplit

# Ranges `is_global` lets through that reach other networks' hosts: NAT64 (64:ff9b::/96, and the local
# 64:ff9b:1::/48), 6to4 (2002::/16), Teredo (2001::/32), plus IPv4-mapped addresses.
_BLOCKED = tuple(
    ipaddress.ip_network(net)
    for net in ("64:ff9b::/96", "64:ff9b:1::/48", "2002::/16", "2001::/32", "::ffff:0:0/96")
)


def is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    return ip.is_global and not any(ip in net for net in _BLOCKED if net.version == ip.version)


async def resolve(host: str, port: int) -> list[str]:
    """Every address `host` resolves to (empty when it does not resolve)."""
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        return []
    return [str(info[4][0]).split("%", 1)[0] for info in infos]


async def public_address(host: str, port: int) -> str | None:
    """One address of `host` if every address it resolves to is public; None otherwise."""
    addresses = await resolve(host, port)
    if not addresses or not all(is_public(address) for address in addresses):
        return None
    return addresses[0]


def pinned_url(url: str, address: str) -> str:
    """`url` with its host replaced by the checked `address` (the port kept)."""
    parts = urlsplit(url)
    host = f"[{address}]" if ":" in address else address
    netloc = host if parts.port is None else f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))
