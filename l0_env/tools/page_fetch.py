"""Fetch a web page for the agent: every redirect hop checked, the body streamed under a byte cap.

A URL the agent opens (a search result, or wherever its server redirects) is untrusted: it may
point at, or redirect to, the host's own services (``127.0.0.1``, the private network, the cloud
metadata address). `fetch_page` follows redirects itself, one hop at a time; for each hop it
resolves the host name, asks the `AddressPolicy` about **every** address the name resolves to
(one denied address refuses the hop: a name must not mix public and private answers), and then
connects to the address it checked, not to the name (so a DNS answer that changes between the
check and the connection, "DNS rebinding", cannot slip through). HTTPS still verifies the
certificate against the host name (sent as SNI), and ``Host`` carries the name.

The body is read in chunks and never held beyond ``max_bytes`` (after decompression: a gzip
bomb stops at the cap too); what is past the cap is not read, and the connection is closed.
"""

from __future__ import annotations

import socket
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from l0_env.tools.addresses import AddressPolicy, deny_reason, parse_address
from l0_env.tools.search import SearchError

Resolver = Callable[[str, int], list[str]]
"""Resolves ``(host, port)`` to the IP addresses (as strings) the host would connect to."""

REDIRECT_STATUS = frozenset({301, 302, 303, 307, 308})
_READ_CHUNK = 64 * 1024


class FetchRefused(SearchError):
    """The host refused to fetch a URL: a denied address, a scheme other than http(s), too many redirects."""


@dataclass(frozen=True)
class FetchedPage:
    """What `fetch_page` read: the final URL, its status and content type, and at most the cap of body."""

    url: str
    status: int
    content_type: str
    body: bytes
    truncated: bool

    def text(self) -> str:
        """The body decoded with the charset the server named (UTF-8 otherwise), bad bytes replaced."""
        encoding = "utf-8"
        for part in self.content_type.split(";")[1:]:
            key, _, value = part.strip().partition("=")
            if key.lower() == "charset" and value:
                encoding = value.strip("\"' ")
        try:
            return self.body.decode(encoding, errors="replace")
        except LookupError:  # an unknown charset name
            return self.body.decode("utf-8", errors="replace")


def system_resolver(host: str, port: int) -> list[str]:
    """Every address ``getaddrinfo`` gives for ``host`` (numeric forms such as ``2130706433`` included).

    Raises:
        SearchError: The name does not resolve.
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise SearchError(f"the host name {host!r} does not resolve ({exc})") from None
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def check_url(url: str | httpx.URL, *, resolver: Resolver, policy: AddressPolicy) -> str:
    """The address to connect to for ``url``, after the policy allowed every address of its host.

    Raises:
        FetchRefused: Not a valid http(s) URL with a host, or the host has an address the policy denies.
        SearchError: The host name does not resolve.
    """
    if isinstance(url, str):
        url = _parse_url(url)
    if url.scheme not in ("http", "https"):
        raise FetchRefused(f"{url} is not an http(s) URL")
    host = url.raw_host.decode("ascii")  # IDNA-encoded: what DNS is asked
    if not host:
        raise FetchRefused(f"{url} has no host")
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        addresses = [str(parse_address(host))]
    except ValueError:
        addresses = resolver(host, port)
    if not addresses:
        raise SearchError(f"the host name {host!r} does not resolve")
    for address in addresses:
        try:
            reason = policy(parse_address(address))
        except ValueError:
            reason = "not an IP address"
        if reason is not None:
            # For a DNS name the address itself is not named: it would tell the agent about the
            # host's internal network.
            what = f"{host} is {reason}" if _is_literal(host) else f"{host!r} resolves to {reason}"
            raise FetchRefused(f"{what}; only public internet addresses are opened")
    return addresses[0]


def fetch_page(
    client: httpx.Client,
    url: str,
    *,
    max_bytes: int,
    max_redirects: int = 5,
    max_seconds: float = 60.0,
    resolver: Resolver = system_resolver,
    policy: AddressPolicy = deny_reason,
    headers: dict[str, str] | None = None,
    trust_first_hop: bool = False,
) -> FetchedPage:
    """GET ``url``, following at most ``max_redirects`` redirects, each hop checked (module docstring).

    Args:
        client: The HTTP client; it must not follow redirects itself (they are followed here).
        url: The page to fetch.
        max_bytes: The most bytes of (decompressed) body read and kept; the rest is never read.
        max_redirects: Redirects followed before giving up.
        max_seconds: Reading stops after this long (a server dripping bytes); the page is then
            marked truncated.
        resolver: Host name to addresses; `system_resolver` by default.
        policy: Which addresses may be fetched; `l0_env.tools.addresses.deny_reason` by default.
        headers: Extra request headers, sent to the first hop only (e.g. a reader's token).
        trust_first_hop: Do not check the first URL's address (a reader service the operator
            configured); redirects from it are still checked.

    Raises:
        FetchRefused: A hop's address is denied, a scheme is not http(s), or too many redirects.
        SearchError: A host does not resolve, or the response uses an unknown content encoding.
        httpx.TransportError: The connection failed (the caller decides about retrying).
    """
    started = time.monotonic()
    current = _parse_url(url)
    extra = dict(headers or {})
    for hop in range(max_redirects + 1):
        try:
            request = _pinned_request(
                client, current, extra, resolver, policy, trusted=trust_first_hop and hop == 0
            )
        except FetchRefused as exc:
            if hop == 0:
                raise
            raise FetchRefused(f"it redirects to {current}: {exc}") from None
        response = client.send(request, stream=True, follow_redirects=False)
        try:
            location = response.headers.get("location")
            if response.status_code in REDIRECT_STATUS and location:
                current = _parse_url(location, base=current)
                extra = {}  # a token for the first host never travels to the next one
                continue
            body, truncated = _read_capped(response, max_bytes, started + max_seconds)
            return FetchedPage(
                url=str(current),
                status=response.status_code,
                content_type=response.headers.get("content-type", ""),
                body=body,
                truncated=truncated,
            )
        finally:
            response.close()
    raise FetchRefused(f"it redirects more than {max_redirects} times")


def _pinned_request(
    client: httpx.Client,
    url: httpx.URL,
    headers: dict[str, str],
    resolver: Resolver,
    policy: AddressPolicy,
    *,
    trusted: bool,
) -> httpx.Request:
    if trusted:
        return client.build_request("GET", url, headers=headers)
    address = check_url(url, resolver=resolver, policy=policy)
    # Connect to the checked address; the name goes in Host (and in SNI for the certificate check).
    pinned = url.copy_with(host=address)
    host_header = url.netloc.decode("ascii")
    extensions = {"sni_hostname": url.raw_host.decode("ascii")} if url.scheme == "https" else {}
    return client.build_request(
        "GET", pinned, headers={**headers, "Host": host_header}, extensions=extensions
    )


def _read_capped(response: httpx.Response, max_bytes: int, deadline: float) -> tuple[bytes, bool]:
    """At most ``max_bytes`` of the decoded body, and whether more was left unread."""
    decoder = _decoder(response.headers.get("content-encoding", ""))
    out = bytearray()
    for raw in response.iter_raw(_READ_CHUNK):
        data = raw
        while data:
            room = max_bytes - len(out)
            if room <= 0:
                return bytes(out), True
            chunk, data = decoder(data, room)
            out += chunk
        if len(out) >= max_bytes or time.monotonic() > deadline:
            return bytes(out), True
    return bytes(out), False


def _decoder(encoding: str) -> Callable[[bytes, int], tuple[bytes, bytes]]:
    """A function ``(data, room) -> (at most room decoded bytes, data not yet consumed)``."""
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return lambda data, room: (data[:room], data[room:])
    if encoding in ("gzip", "x-gzip", "deflate"):
        return _Inflater(raw_fallback=encoding == "deflate").decode
    raise SearchError(f"the page uses a content encoding this client does not read ({encoding!r})")


def _parse_url(text: str, base: httpx.URL | None = None) -> httpx.URL:
    try:
        return base.join(text) if base is not None else httpx.URL(text)
    except (httpx.InvalidURL, TypeError, ValueError) as exc:
        raise FetchRefused(f"{text[:200]!r} is not a valid URL ({exc})") from None


class _Inflater:
    """gzip or zlib (header detected: wbits 32+), or raw deflate, which some servers send as "deflate"."""

    def __init__(self, *, raw_fallback: bool) -> None:
        self._z = zlib.decompressobj(zlib.MAX_WBITS | 32)
        self._raw_fallback = raw_fallback
        self._started = False

    def decode(self, data: bytes, room: int) -> tuple[bytes, bytes]:
        try:
            chunk = self._z.decompress(data, room)  # max_length = room: a bomb stops at the cap
        except zlib.error:
            if self._started or not self._raw_fallback:
                raise SearchError("the page's compressed body is corrupt") from None
            self._z = zlib.decompressobj(-zlib.MAX_WBITS)
            chunk = self._z.decompress(data, room)
        self._started = True
        return chunk, self._z.unconsumed_tail


def _is_literal(host: str) -> bool:
    try:
        parse_address(host)
    except ValueError:
        return False
    return True
