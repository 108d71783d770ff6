"""HTTP(S) GET on the standard library, with redirects that keep credentials on their own host.

Why not fsspec's HTTPFileSystem: it needs aiohttp (and five more packages) for what is a single
streamed GET here. Why not ``requests``: it is not otherwise needed, and following redirects by
hand makes the credential rule explicit and testable: an access token is sent only to the origin
(scheme, host, port) it was given for, never to a redirect target elsewhere, and it is never put in
a message or a log line. $http_proxy / $https_proxy / $no_proxy are honoured (not for loopback).
"""

from __future__ import annotations

import base64
import http.client
import io
import ipaddress
import ssl
import urllib.parse
import urllib.request
from typing import Mapping

REDIRECT_STATUS = {301, 302, 303, 307, 308}
# Statuses worth retrying: the server (or a proxy) may answer differently a moment later.
TRANSIENT_STATUS = {408, 425, 429, 500, 502, 503, 504}
# Statuses that mean the file is not there (and will not be there on a retry).
GONE_STATUS = {404, 410}
DEFAULT_TIMEOUT = 30.0  # seconds without progress on one socket operation


class HTTPStatusError(OSError):
    """The server answered with an error status. ``url`` is already redacted."""

    def __init__(self, url: str, status: int, reason: str):
        self.url, self.status, self.reason = url, status, reason
        super().__init__(f"HTTP {status} {reason}: {url}")

    @property
    def transient(self) -> bool:
        return self.status in TRANSIENT_STATUS or self.status >= 500

    @property
    def gone(self) -> bool:
        return self.status in GONE_STATUS


def is_http(uri: str) -> bool:
    """True for an ``http://`` or ``https://`` URI (any case)."""
    return str(uri).lower().startswith(("http://", "https://"))


def origin(url: str) -> tuple[str, str, int]:
    """(scheme, lower-case host, port): where a credential may go."""
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or "").lower(), parts.port or (443 if scheme == "https" else 80)


def redact(url: str) -> str:
    """The URL without user:password@ and with the query string hidden (signed URLs carry secrets)."""
    parts = urllib.parse.urlsplit(str(url))
    if not parts.scheme or not parts.netloc:
        return str(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = host + (f":{parts.port}" if parts.port else "")
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "..." if parts.query else "", ""))


class Response(io.RawIOBase):
    """A streamed response body (``read``/``readinto``) plus ``status``, ``headers`` and final ``url``.

    Closing it closes the connection.
    """

    def __init__(self, url: str, conn: http.client.HTTPConnection, resp: http.client.HTTPResponse):
        super().__init__()
        self.url, self._conn, self._resp = url, conn, resp
        self.status, self.reason, self.headers = resp.status, resp.reason, resp.headers

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        return self._resp.readinto(buffer)

    def read(self, size: int = -1) -> bytes:
        return self._resp.read(None if size is None or size < 0 else size)

    def close(self) -> None:
        if not self.closed:
            try:
                self._resp.close()
            finally:
                self._conn.close()
        super().close()


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host.lower() == "localhost"


def proxy_for(url: str) -> str | None:
    """The proxy URL from $http_proxy / $https_proxy for ``url`` (honouring $no_proxy), or None.
    Loopback hosts never go through a proxy."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    proxies = urllib.request.getproxies_environment()
    proxy = proxies.get(parts.scheme.lower())
    if not proxy or _is_loopback(host) or urllib.request.proxy_bypass_environment(host, proxies):
        return None
    return proxy if "://" in proxy else f"http://{proxy}"


def _connect(url: str, timeout: float) -> tuple[http.client.HTTPConnection, str, dict[str, str]]:
    """(connection, request target, extra headers) for ``url``, through a proxy when configured:
    https is tunnelled with CONNECT (the proxy sees no header), http is sent as an absolute URL."""
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise ValueError(f"not an http(s) URL: {redact(url)}")
    if not parts.hostname:
        raise ValueError(f"URL has no host: {redact(url)}")
    target = urllib.parse.urlunsplit(("", "", parts.path or "/", parts.query, ""))
    proxy = proxy_for(url)
    if proxy is None:
        host, port, extra = parts.hostname, parts.port, {}
    else:
        p = urllib.parse.urlsplit(proxy)
        host, port = p.hostname, p.port or 80
        extra = {}
        if p.username is not None:
            cred = f"{urllib.parse.unquote(p.username)}:{urllib.parse.unquote(p.password or '')}"
            extra["Proxy-Authorization"] = "Basic " + base64.b64encode(cred.encode()).decode("ascii")
    if scheme == "https":
        conn = http.client.HTTPSConnection(host, port, timeout=timeout, context=ssl.create_default_context())
        if proxy is not None:
            conn.set_tunnel(parts.hostname, parts.port or 443, headers=extra)
            extra = {}
    else:
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
        if proxy is not None:
            netloc = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
            netloc += f":{parts.port}" if parts.port else ""
            target = urllib.parse.urlunsplit(("http", netloc, parts.path or "/", parts.query, ""))
    return conn, target, extra


def open_url(url: str, *, method: str = "GET", headers: Mapping[str, str] | None = None,
             access_token: str | None = None, timeout: float = DEFAULT_TIMEOUT,
             max_redirects: int = 10, allow_status: tuple[int, ...] = ()) -> Response:
    """Send one request, following redirects; return the streamed response.

    ``access_token`` goes as ``Authorization: Bearer`` to the origin of ``url`` only: once a
    redirect leaves that origin the token is dropped for the rest of the chain. Statuses >= 400
    raise `HTTPStatusError` unless listed in ``allow_status``. Network failures raise the
    underlying ``OSError`` / ``http.client.HTTPException``.
    """
    token_origin = origin(url)
    current = url
    for _ in range(max_redirects + 1):
        send = {"User-Agent": "synthgap", "Accept-Encoding": "identity", **(headers or {})}
        if access_token and origin(current) == token_origin:
            send["Authorization"] = f"Bearer {access_token}"
        else:
            token_origin = None  # left the origin: never send the token again in this chain
        conn, target, extra = _connect(current, timeout)
        try:
            conn.request(method, target, headers={**send, **extra})
            resp = conn.getresponse()
        except BaseException:
            conn.close()
            raise
        if resp.status in REDIRECT_STATUS and resp.getheader("Location"):
            location = urllib.parse.urljoin(current, resp.getheader("Location"))
            resp.close()
            conn.close()
            if resp.status == 303:
                method = "GET" if method != "HEAD" else method
            current = location
            continue
        if resp.status >= 400 and resp.status not in allow_status:
            reason = resp.reason
            resp.close()
            conn.close()
            raise HTTPStatusError(redact(current), resp.status, reason)
        return Response(current, conn, resp)
    raise HTTPStatusError(redact(url), resp.status, f"(redirect) followed {max_redirects} redirects, giving up")
