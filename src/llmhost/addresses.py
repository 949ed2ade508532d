"""Addresses, in one place: is it loopback, is it an address at all, which host a
host:port or URL names. The front door's bind, the metrics bind, the roles' listen
addresses and the units' IP lists all ask here."""

from __future__ import annotations

import ipaddress

LOCAL_NAMES = ("localhost", "ip6-localhost")
WILDCARDS = ("", "*")


def bare(host: str) -> str:
    """A host as HAProxy or an inventory writes it, without ipv4@/ipv6@ and brackets."""
    return str(host).strip().removeprefix("ipv4@").removeprefix("ipv6@").strip("[]")


def loopback(host: str) -> bool | None:
    """True for a loopback address or localhost; False for a wildcard or any other
    address; None for a host name only DNS could place."""
    h = bare(host)
    if h in WILDCARDS:
        return False
    if h in LOCAL_NAMES:
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        return None


def is_bind(host: str) -> bool:
    """An address a daemon can bind: an IP, a wildcard or localhost (not a DNS name)."""
    return loopback(host) is not None


def host_of(address: str) -> str:
    """The host of host:port, [v6]:port, a bare address or a URL."""
    a = str(address).strip()
    a = a.split("//", 1)[1].split("/", 1)[0] if "//" in a else a
    if a.startswith("["):
        return a[1:a.index("]")] if "]" in a else a
    return a.rsplit(":", 1)[0] if a.count(":") == 1 else a
