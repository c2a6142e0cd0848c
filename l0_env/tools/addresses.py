"""Which network addresses the host may fetch a web page from (pure).

The agent chooses the URLs that `open_page` fetches (through search results, and redirects that a
page it found sends), so a page must never make the host reach its own services: loopback, the
private network, link-local (cloud metadata at 169.254.169.254), multicast, reserved or unspecified
addresses. `deny_reason` is the decision for one address; it does not trust
`ipaddress`'s ``is_global`` alone, which differs between Python versions and calls some IPv6 forms
that carry an IPv4 address inside "global" (NAT64 ``64:ff9b::7f00:1`` is 127.0.0.1; 6to4
``2002:7f00:1::`` embeds 127.0.0.1), and multicast and site-local ``fec0::/10`` too.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

AddressPolicy = Callable[[IPAddress], str | None]
"""Decides one resolved address: None lets the host connect, a string says why it may not.

`deny_reason` is the default; tests inject one that also admits their fake server on 127.0.0.1."""

_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))
_SIX_TO_FOUR = ipaddress.ip_network("2002::/16")
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")
# IANA special-purpose blocks that are not globally reachable but that some Python versions call
# global (so they are listed here rather than left to `is_global`).
_SPECIAL = tuple(
    ipaddress.ip_network(n) for n in ("192.0.0.0/24", "192.88.99.0/24", "3fff::/20", "5f00::/16")
)
_SPECIAL_GLOBAL = frozenset(ipaddress.ip_address(a) for a in ("192.0.0.9", "192.0.0.10"))  # PCP, TURN anycast


def parse_address(address: str | IPAddress) -> IPAddress:
    """An `ipaddress` object for a literal address (an IPv6 zone such as ``%eth0`` is dropped).

    Raises:
        ValueError: ``address`` is not an IP address.
    """
    if isinstance(address, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
        return address
    text = address.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    return ipaddress.ip_address(text.split("%", 1)[0])


def embedded_ipv4(ip: ipaddress.IPv6Address) -> tuple[str, ipaddress.IPv4Address] | None:
    """The IPv4 address an IPv6 address carries, and the form's name, or None.

    v4-mapped (``::ffff:a.b.c.d``), IPv4-compatible (``::a.b.c.d``, deprecated), NAT64
    (``64:ff9b::/96``, ``64:ff9b:1::/48``: the last 32 bits), 6to4 (``2002:AABB:CCDD::``) and Teredo
    (the client address, stored inverted).
    """
    if ip.ipv4_mapped is not None:
        return "v4-mapped", ip.ipv4_mapped
    packed = int(ip)
    if any(ip in net for net in _NAT64):
        return "NAT64", ipaddress.IPv4Address(packed & 0xFFFFFFFF)
    if ip.sixtofour is not None:
        return "6to4", ip.sixtofour
    if ip.teredo is not None:
        return "Teredo", ip.teredo[1]
    if ip in _IPV4_COMPATIBLE and packed > 1:  # :: and ::1 are themselves, not an IPv4 address
        return "IPv4-compatible", ipaddress.IPv4Address(packed & 0xFFFFFFFF)
    return None


def _category(ip: IPAddress) -> str | None:
    # Most specific first, so the reason names what the address is (0.0.0.0 is also "private").
    checks = (
        ("unspecified", ip.is_unspecified),
        ("loopback", ip.is_loopback),
        ("link-local", ip.is_link_local),
        ("multicast", ip.is_multicast),
        ("private", ip.is_private),
        ("reserved", ip.is_reserved),
        ("site-local", isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local),
    )
    for name, hit in checks:
        if hit:
            return name
    if ip not in _SPECIAL_GLOBAL and any(ip in net for net in _SPECIAL):
        return "special-purpose"
    if not ip.is_global:  # shared address space 100.64/10, benchmarking 198.18/15, and the like
        return "non-global"
    return None


def deny_reason(address: str | IPAddress) -> str | None:
    """Why the host must not connect to ``address``, or None when it is a public internet address.

    Denied: unspecified, loopback, link-local, multicast, private, reserved, IPv6 site-local and any
    other address that is not globally routable; an IPv6 address that carries an IPv4 address
    (v4-mapped, IPv4-compatible, NAT64, 6to4, Teredo) is judged by that IPv4 address as well.
    Anything that does not parse as an address is denied.

    Returns:
        None, or a short phrase such as ``"a loopback address"`` or
        ``"a v4-mapped IPv6 address of a private address"``, ``"an unspecified address"``.
    """
    try:
        ip = parse_address(address)
    except ValueError:
        return "not an IP address"
    if isinstance(ip, ipaddress.IPv6Address):
        inner = embedded_ipv4(ip)
        if inner is not None:
            form, v4 = inner
            reason = _category(v4)
            if reason is not None:
                return f"{_article(form)} IPv6 address of {_article(reason)} address"
            if form == "IPv4-compatible":
                return "a deprecated IPv4-compatible IPv6 address"
    reason = _category(ip)
    return None if reason is None else f"{_article(reason)} address"


def _article(word: str) -> str:
    return ("an " if word[0] in "aeiouAEIOU" else "a ") + word
