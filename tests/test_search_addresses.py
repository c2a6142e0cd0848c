"""Which addresses `open_page` may fetch from: the pure decision, exhaustively, and the URL check."""

from __future__ import annotations

import ipaddress

import pytest

from l0_env.tools.addresses import deny_reason, embedded_ipv4
from l0_env.tools.page_fetch import FetchRefused, check_url
from l0_env.tools.search import SearchError

DENIED = {
    # IPv4
    "0.0.0.0": "an unspecified address",
    "0.1.2.3": "a private address",  # "this network"
    "127.0.0.1": "a loopback address",
    "127.255.255.254": "a loopback address",
    "10.0.0.1": "a private address",
    "172.16.0.1": "a private address",
    "172.31.255.255": "a private address",
    "192.168.1.1": "a private address",
    "169.254.169.254": "a link-local address",  # cloud metadata
    "100.64.0.1": "a non-global address",  # shared address space (carrier NAT)
    "100.127.255.255": "a non-global address",
    "192.0.0.8": "a special-purpose address",  # IPv4 dummy address: is_global in Python 3.11
    "192.0.0.100": "a special-purpose address",
    "192.88.99.1": "a special-purpose address",  # deprecated 6to4 relay anycast
    "3fff::1": "a special-purpose address",  # documentation (2024)
    "192.0.2.1": "a private address",  # documentation
    "198.18.0.1": "a private address",  # benchmarking
    "198.51.100.1": "a private address",
    "203.0.113.1": "a private address",
    "224.0.0.1": "a multicast address",
    "233.252.0.1": "a multicast address",  # is_global in Python 3.11: not trusted
    "239.255.255.250": "a multicast address",
    "240.0.0.1": "a private address",  # reserved (Python also calls it private)
    "255.255.255.255": "a private address",
    # IPv6
    "::": "an unspecified address",
    "::1": "a loopback address",
    "fe80::1": "a link-local address",
    "fe80::1%eth0": "a link-local address",  # a zone is dropped, the address still judged
    "[fe80::1]": "a link-local address",
    "fc00::1": "a private address",
    "fd12:3456::1": "a private address",
    "fec0::1": "a site-local address",  # is_global in Python 3.11: not trusted
    "ff02::1": "a multicast address",
    "ff0e::1": "a multicast address",
    "2001:db8::1": "a private address",  # documentation
    "100::1": "a private address",  # discard-only
    "2001:10::1": "a private address",  # ORCHID
    # IPv6 forms that carry an IPv4 address
    "::ffff:127.0.0.1": "a v4-mapped IPv6 address of a loopback address",
    "::ffff:7f00:1": "a v4-mapped IPv6 address of a loopback address",
    "::ffff:10.0.0.1": "a v4-mapped IPv6 address of a private address",
    "::ffff:169.254.169.254": "a v4-mapped IPv6 address of a link-local address",
    "::ffff:0.0.0.0": "a v4-mapped IPv6 address of an unspecified address",
    "::ffff:8.8.8.8": "a reserved address",  # public inside, still not a normal address to dial
    "64:ff9b::7f00:1": "a NAT64 IPv6 address of a loopback address",  # is_global in Python 3.11
    "64:ff9b::a9fe:a9fe": "a NAT64 IPv6 address of a link-local address",
    "64:ff9b:1::a00:1": "a NAT64 IPv6 address of a private address",
    "64:ff9b::808:808": "a reserved address",
    "2002:7f00:1::1": "a 6to4 IPv6 address of a loopback address",  # is_global in Python 3.11
    "2002:a00:1::1": "a 6to4 IPv6 address of a private address",
    "2001:0:4136:e378:8000:63bf:3fff:fdd2": "a Teredo IPv6 address of a private address",
    "::127.0.0.1": "an IPv4-compatible IPv6 address of a loopback address",
    "::10.0.0.1": "an IPv4-compatible IPv6 address of a private address",
    "::8.8.8.8": "a deprecated IPv4-compatible IPv6 address",
    # not addresses at all
    "localhost": "not an IP address",
    "": "not an IP address",
    "127.1": "not an IP address",  # inet_aton shorthand: only getaddrinfo resolves it (then judged)
    "1.2.3.4.5": "not an IP address",
}

ALLOWED = [
    "8.8.8.8",
    "1.1.1.1",
    "93.184.216.34",
    "2606:4700:4700::1111",
    "2a00:1450:4001:82a::200e",
    "2002:808:808::1",
]


@pytest.mark.parametrize(("address", "reason"), DENIED.items())
def test_denied_addresses_and_why(address: str, reason: str) -> None:
    assert deny_reason(address) == reason


@pytest.mark.parametrize("address", ALLOWED)
def test_public_addresses_are_allowed(address: str) -> None:
    assert deny_reason(address) is None
    assert deny_reason(ipaddress.ip_address(address)) is None


def test_every_address_of_each_special_ipv4_block_is_denied() -> None:
    """Both ends and the middle of every special-purpose IPv4 block (IANA registry), as v4 and v4-mapped."""
    blocks = [
        "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
        "192.0.0.0/24", "192.0.2.0/24", "192.168.0.0/16", "198.18.0.0/15", "198.51.100.0/24",
        "203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4",
    ]  # fmt: skip
    for block in blocks:
        net = ipaddress.ip_network(block)
        for ip in (net[0], net[net.num_addresses // 2], net[-1]):
            if ip == ipaddress.ip_address("192.0.0.9") or ip == ipaddress.ip_address("192.0.0.10"):
                continue  # globally reachable anycast (PCP, TURN) by the registry
            assert deny_reason(ip) is not None, ip
            assert deny_reason(f"::ffff:{ip}") is not None, ip
            assert deny_reason(f"64:ff9b::{ip}") is not None, ip


def test_embedded_ipv4_forms() -> None:
    v6 = ipaddress.IPv6Address
    assert embedded_ipv4(v6("::ffff:1.2.3.4")) == ("v4-mapped", ipaddress.IPv4Address("1.2.3.4"))
    assert embedded_ipv4(v6("64:ff9b::1.2.3.4")) == ("NAT64", ipaddress.IPv4Address("1.2.3.4"))
    assert embedded_ipv4(v6("2002:102:304::")) == ("6to4", ipaddress.IPv4Address("1.2.3.4"))
    assert embedded_ipv4(v6("::1.2.3.4")) == ("IPv4-compatible", ipaddress.IPv4Address("1.2.3.4"))
    assert embedded_ipv4(v6("::1")) is None and embedded_ipv4(v6("::")) is None
    assert embedded_ipv4(v6("2606:4700::1111")) is None


def resolver(table: dict[str, list[str]]):
    calls: list[str] = []

    def resolve(host: str, port: int) -> list[str]:
        calls.append(host)
        return table.get(host, [])

    resolve.calls = calls  # type: ignore[attr-defined]
    return resolve


def test_check_url_judges_every_address_a_name_resolves_to() -> None:
    res = resolver(
        {
            "public.example": ["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946"],
            "internal.example": ["10.0.0.7"],
            "mixed.example": ["93.184.216.34", "127.0.0.1"],  # one bad answer refuses the name
            "rebind.example": ["::ffff:169.254.169.254"],
        }
    )
    assert check_url("https://public.example/a", resolver=res, policy=deny_reason) == "93.184.216.34"
    assert check_url("http://8.8.8.8:8080/", resolver=res, policy=deny_reason) == "8.8.8.8"
    with pytest.raises(FetchRefused, match=r"'internal.example' resolves to a private address; only public"):
        check_url("http://internal.example/", resolver=res, policy=deny_reason)
    with pytest.raises(FetchRefused, match=r"'mixed.example' resolves to a loopback address"):
        check_url("http://mixed.example/", resolver=res, policy=deny_reason)
    with pytest.raises(FetchRefused, match="v4-mapped IPv6 address of a link-local"):
        check_url("http://rebind.example/", resolver=res, policy=deny_reason)
    with pytest.raises(FetchRefused, match=r"^127\.0\.0\.1 is a loopback address"):
        check_url("http://127.0.0.1:8000/", resolver=res, policy=deny_reason)
    with pytest.raises(FetchRefused, match=r"^::1 is a loopback address"):
        check_url("http://[::1]/", resolver=res, policy=deny_reason)
    with pytest.raises(SearchError, match="does not resolve"):
        check_url("http://nowhere.example/", resolver=res, policy=deny_reason)
    for bad in ("file:///etc/passwd", "gopher://8.8.8.8/", "ftp://8.8.8.8/", "http://", "http://[::1"):
        with pytest.raises(FetchRefused):
            check_url(bad, resolver=res, policy=deny_reason)
    # A literal address is judged without asking the resolver.
    assert "127.0.0.1" not in res.calls  # type: ignore[attr-defined]


def test_numeric_host_names_are_resolved_then_judged() -> None:
    """Forms only ``getaddrinfo`` understands (decimal, hex, short) are resolved, so judged as what they are."""
    from l0_env.tools.page_fetch import system_resolver

    for host in ("2130706433", "0x7f000001", "127.1"):
        assert system_resolver(host, 80) == ["127.0.0.1"], host
        with pytest.raises(FetchRefused, match="resolves to a loopback address"):
            check_url(f"http://{host}/", resolver=system_resolver, policy=deny_reason)
    with pytest.raises(FetchRefused, match="not a valid URL"):  # octal: the URL parser refuses it
        check_url("http://0177.0.0.1/", resolver=system_resolver, policy=deny_reason)
