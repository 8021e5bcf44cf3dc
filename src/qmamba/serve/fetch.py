"""Fetch a remote image for the server, only from public addresses, within a size, a time and a redirect limit.

    fetch_image_bytes("https://example.org/cat.png", RemoteLimits(max_bytes=20 << 20)) -> bytes

Every hop (the first URL and each redirect) is resolved here, every address its host resolves to must be public
(``is_public``: no private, loopback, link-local, multicast, reserved, shared or unspecified address, IPv4 or
IPv6, and no IPv4 address hidden in an IPv6 one), and the connection goes to the address that was checked, so
a name that resolves again to another address between the check and the connection cannot reach an inner
host. HTTPS still verifies the certificate against the host name. Any refusal is an ``APIError`` (400) that
names the URL's field.
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urljoin, urlsplit

from qmamba.serve.errors import bad_request

REDIRECTS = (301, 302, 303, 307, 308)


def is_public(address: str) -> bool:
    """True for an address on the public internet (the only ones a remote image may come from)."""
    ip = ipaddress.ip_address(address.split("%")[0])
    if isinstance(ip, ipaddress.IPv6Address):
        inner = ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if inner is not None and not is_public(str(inner)):
            return False
    return ip.is_global and not (ip.is_multicast or ip.is_reserved or ip.is_loopback or ip.is_link_local)


def resolve(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (TCP)."""
    return sorted({info[4][0] for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)})


@dataclass
class RemoteLimits:
    max_bytes: int = 20 << 20
    timeout: float = 10.0  # seconds for the whole fetch, every hop included
    max_redirects: int = 3
    resolver: Callable[[str, int], list[str]] = field(default=resolve)  # (host, port) -> addresses
    allowed: Callable[[str], bool] = field(default=is_public)  # an address a connection may go to


def fetch_image_bytes(url: str, limits: RemoteLimits, param: str | None = None) -> bytes:
    """The body of ``url`` after at most ``limits.max_redirects`` redirects (see the module docstring)."""
    deadline = time.monotonic() + limits.timeout
    for _ in range(limits.max_redirects + 1):
        response, conn = _get(url, limits, deadline, param)
        try:
            if response.status in REDIRECTS:
                location = response.getheader("Location")
                if not location:
                    raise bad_request(f"image {url}: a {response.status} redirect without a Location", param)
                url = urljoin(url, location)
                continue
            if response.status != 200:
                raise bad_request(f"image {url}: the server answered HTTP {response.status}", param,
                                  "image_fetch_failed")
            return _read_limited(response, url, limits, deadline, param)
        finally:
            conn.close()
    raise bad_request(f"image URL: more than {limits.max_redirects} redirects; give the image's final URL", param,
                      "image_fetch_failed")


def _get(url: str, limits: RemoteLimits, deadline: float, param: str | None):
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise bad_request(f"image {_clip(url)}: only http(s) URLs can be fetched", param, "invalid_image_url")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise bad_request(f"image {_clip(url)}: the URL's port is not a number", param, "invalid_image_url") from None
    address = _checked_address(parts.hostname, port, limits, param)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    remaining = max(deadline - time.monotonic(), 0.001)
    cls = _PinnedHTTPS if parts.scheme == "https" else _PinnedHTTP
    conn = cls(parts.hostname, address, port, remaining)
    try:
        conn.request("GET", path, headers={"Accept": "image/*", "User-Agent": "qmamba-serve"})
        return conn.getresponse(), conn
    except (OSError, http.client.HTTPException, ValueError) as e:
        conn.close()
        raise bad_request(f"image {_clip(url)}: could not be fetched ({type(e).__name__}: {e})", param,
                          "image_fetch_failed") from None


def _checked_address(host: str, port: int, limits: RemoteLimits, param: str | None) -> str:
    try:
        addresses = limits.resolver(host, port)
    except (OSError, UnicodeError) as e:
        raise bad_request(f"image host {host!r} does not resolve ({e})", param, "image_fetch_failed") from None
    refused = [a for a in addresses if not limits.allowed(a)]
    if not addresses or refused:
        raise bad_request(f"image host {host!r} resolves to {', '.join(refused) or 'nothing'}: not a public "
                          f"address; remote images come only from the public internet", param, "image_url_refused")
    return addresses[0]


def _read_limited(response, url: str, limits: RemoteLimits, deadline: float, param: str | None) -> bytes:
    declared = response.getheader("Content-Length")
    if declared and declared.isdigit() and int(declared) > limits.max_bytes:
        raise _too_big(url, int(declared), limits.max_bytes, param)
    chunks, size = [], 0
    while True:
        if time.monotonic() > deadline:
            raise bad_request(f"image {_clip(url)}: not fetched within {limits.timeout:g} s", param,
                              "image_fetch_timeout")
        try:
            chunk = response.read(1 << 16)
        except (OSError, http.client.HTTPException) as e:
            raise bad_request(f"image {_clip(url)}: the download failed ({type(e).__name__})", param,
                              "image_fetch_failed") from None
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > limits.max_bytes:
            raise _too_big(url, size, limits.max_bytes, param)
        chunks.append(chunk)


def _too_big(url: str, size: int, limit: int, param: str | None):
    return bad_request(f"image {_clip(url)} is at least {size} bytes, over the limit of {limit} bytes "
                       f"(--max-image-bytes)", param, "image_too_large")


def _clip(url: str) -> str:
    return url if len(url) <= 100 else url[:97] + "..."


class _PinnedHTTP(http.client.HTTPConnection):
    """A connection to ``host`` that goes to the already checked ``address``."""

    def __init__(self, host: str, address: str, port: int, timeout: float):
        super().__init__(host, port, timeout=timeout)
        self.address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self.address, self.port), self.timeout)


class _PinnedHTTPS(http.client.HTTPSConnection):
    """As ``_PinnedHTTP``, over TLS with the certificate checked against ``host``."""

    def __init__(self, host: str, address: str, port: int, timeout: float):
        self.tls = ssl.create_default_context()
        super().__init__(host, port, timeout=timeout, context=self.tls)
        self.address = address

    def connect(self) -> None:
        sock = socket.create_connection((self.address, self.port), self.timeout)
        self.sock = self.tls.wrap_socket(sock, server_hostname=self.host)
