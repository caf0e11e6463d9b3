"""Standard Webhooks signing and verification, and the guard against internal webhook targets.

A message is signed as the Standard Webhooks spec says: ``v1,`` + base64 of HMAC-SHA256, keyed by
the bytes after ``whsec_`` (base64), over ``"{webhook-id}.{webhook-timestamp}.{body}"``. Receivers
verify with :func:`verify` (or any Standard Webhooks library) and drop repeated ``webhook-id``\\ s:
delivery is at least once.

The target guard resolves the URL's host and refuses it when any address it resolves to is
loopback, private, link-local (cloud metadata), multicast, reserved or unspecified, unless
``settings.webhook_allowed_hosts`` names the host or a network holding the address. A post then
goes to exactly an address that was checked (:class:`PinnedClients`): the host is resolved once
per attempt, the connection is made to that address (or a kept-alive one to it is reused), and
the ``Host`` header, TLS SNI and the certificate check still use the host name, so DNS rebinding
between the check and the connection cannot reach an internal address.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import ipaddress
import secrets
import socket
import ssl
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from cryptography.fernet import Fernet, InvalidToken

from geodata.errors import ConfigurationError, InputError
from geodata.settings import Settings

SECRET_PREFIX = "whsec_"
SEALED_PREFIX = "fernet:"
#: Seconds a receiver accepts between the signed timestamp and its clock (the spec's default).
TOLERANCE_S = 5 * 60
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def new_secret() -> str:
    """A fresh signing secret: ``whsec_`` + base64 of 24 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(24)).decode()


def _fernet(settings: Settings) -> Fernet:
    try:
        return Fernet((settings.webhook_secret_key or "").encode())
    except (ValueError, TypeError):
        raise ConfigurationError(
            "RUTAS_WEBHOOK_SECRET_KEY is not a Fernet key: generate one with "
            "python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'.",
            "RUTAS_WEBHOOK_SECRET_KEY no es una clave Fernet: genere una con "
            "python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'.",
            code="bad_secret_key") from None


def seal(secret: str, settings: Settings) -> str:
    """The secret as stored: encrypted with ``webhook_secret_key`` when one is set, else as it is."""
    if not settings.webhook_secret_key:
        return secret
    return SEALED_PREFIX + _fernet(settings).encrypt(secret.encode()).decode()


def unseal(stored: str, settings: Settings) -> str:
    """The signing secret from its stored form (see :func:`seal`)."""
    if not stored.startswith(SEALED_PREFIX):
        return stored
    try:
        return _fernet(settings).decrypt(stored.removeprefix(SEALED_PREFIX).encode()).decode()
    except InvalidToken:
        raise ConfigurationError(
            "A webhook secret was sealed with another RUTAS_WEBHOOK_SECRET_KEY: restore that key.",
            "Un secreto de webhook se cifró con otra RUTAS_WEBHOOK_SECRET_KEY: restaure esa clave.",
            code="bad_secret_key") from None


def _key(secret: str) -> bytes:
    return base64.b64decode(secret.removeprefix(SECRET_PREFIX))


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header value (``v1,<base64 HMAC-SHA256>``) of one message."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def headers(secret: str, msg_id: str, body: bytes, timestamp: int | None = None) -> dict[str, str]:
    """The three Standard Webhooks headers plus the JSON content type, signed now (Unix seconds)."""
    ts = int(time.time()) if timestamp is None else timestamp
    return {
        "content-type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(ts),
        "webhook-signature": sign(secret, msg_id, ts, body),
    }


def verify(secret: str, received: dict[str, str], body: bytes, now: float | None = None) -> bool:
    """Whether ``received`` headers carry a valid, fresh signature of ``body`` (what a receiver does).

    Header names are matched case-insensitively; several space-separated signatures may be given
    (secret rotation) and one valid ``v1`` signature is enough.
    """
    lower = {k.lower(): v for k, v in received.items()}
    try:
        msg_id, ts_text, given = lower["webhook-id"], lower["webhook-timestamp"], lower["webhook-signature"]
        ts = int(ts_text)
    except (KeyError, ValueError):
        return False
    if abs((time.time() if now is None else now) - ts) > TOLERANCE_S:
        return False
    expected = sign(secret, msg_id, ts, body)
    return any(hmac.compare_digest(expected, part) for part in given.split(" ") if part.startswith("v1,"))


def _allowed(settings: Settings) -> tuple[set[str], list[IPNetwork]]:
    hosts: set[str] = set()
    networks: list[IPNetwork] = []
    for item in (p.strip() for p in settings.webhook_allowed_hosts.split(",")):
        if not item:
            continue
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            hosts.add(item.lower().rstrip("."))
    return hosts, networks


def internal(address: IPAddress) -> bool:
    """Whether an address is internal: loopback, private, link-local, multicast, reserved, unspecified."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return (address.is_loopback or address.is_private or address.is_link_local or address.is_multicast
            or address.is_reserved or address.is_unspecified or not address.is_global)


def _refuse(url: str, reason: str, reason_es: str) -> InputError:
    return InputError(
        f"webhook_url {url[:200]!r}: {reason}",
        f"webhook_url {url[:200]!r}: {reason_es}",
        code="bad_webhook_url",
    )


def resolve(host: str, port: int) -> list[IPAddress]:
    """The addresses ``host`` resolves to, in the resolver's order of preference, without repeats.

    The one place webhook host names are resolved (tests replace it to play a DNS server).
    """
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos))


@dataclass(frozen=True)
class Target:
    """A checked webhook URL: its host name, port, path and the addresses checked for it (in order)."""

    url: str
    scheme: str
    host: str
    port: int
    addresses: tuple[IPAddress, ...]

    @property
    def path(self) -> str:
        """The request target: path and query (``/`` when the URL has none)."""
        parts = urlsplit(self.url)
        return (parts.path or "/") + (f"?{parts.query}" if parts.query else "")


def check_target(url: str, settings: Settings) -> Target:
    """Resolve a webhook URL once and return it with its addresses, refusing internal targets not allowed.

    Raises
    ------
    InputError
        The URL is not http(s), has no host, does not resolve, or resolves to an internal address
        that ``RUTAS_WEBHOOK_ALLOWED_HOSTS`` does not name.
    """
    try:
        parts = urlsplit(url)
    except ValueError:  # e.g. an unclosed IPv6 bracket
        parts = urlsplit("")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _refuse(url, "use an http:// or https:// URL with a host name.",
                      "use una URL http:// o https:// con nombre de host.")
    if parts.username or parts.password:
        raise _refuse(url, "credentials in the URL are not accepted; the signature authenticates us.",
                      "no se aceptan credenciales en la URL; la firma nos autentica.")
    host = parts.hostname.lower().rstrip(".")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        addresses = resolve(host, port)
    except (OSError, ValueError):
        raise _refuse(url, f"the host {host!r} does not resolve; check the name.",
                      f"el host {host!r} no se resuelve; revise el nombre.") from None
    if not addresses:
        raise _refuse(url, f"the host {host!r} does not resolve; check the name.",
                      f"el host {host!r} no se resuelve; revise el nombre.")
    hosts, networks = _allowed(settings)
    for address in addresses:
        if not internal(address) or host in hosts or any(address in net for net in networks):
            continue
        raise _refuse(
            url, f"the host resolves to the internal address {address}, which webhooks may not reach. "
            "An administrator can allow it in RUTAS_WEBHOOK_ALLOWED_HOSTS.",
            f"el host se resuelve a la dirección interna {address}, que los webhooks no pueden alcanzar. "
            "Un administrador puede permitirla en RUTAS_WEBHOOK_ALLOWED_HOSTS.")
    return Target(url=url, scheme=parts.scheme, host=host, port=port, addresses=tuple(addresses))


@dataclass(frozen=True)
class Answer:
    """A receiver's answer: status code and the ``Retry-After`` header (None when absent)."""

    status_code: int
    retry_after: str | None


class _PinnedConnection(http.client.HTTPConnection):
    """HTTP/1.1 to one checked address; ``Host``, TLS SNI and the certificate check use the host name."""

    def __init__(self, target: Target, address: IPAddress, timeout_s: float,
                 tls: ssl.SSLContext | None) -> None:
        super().__init__(target.host, target.port, timeout=timeout_s)
        self.address = address
        self.tls = tls
        self.idle_since = 0.0

    def connect(self) -> None:
        sock = socket.create_connection((str(self.address), self.port), self.timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = sock if self.tls is None else self.tls.wrap_socket(sock, server_hostname=self.host)


class PinnedClients:
    """Posts to a :class:`Target`'s checked addresses, keeping connections alive per host name.

    The connection is made to a checked address (``socket.create_connection`` on the address,
    never on the name), while the ``Host`` header, TLS SNI and certificate verification use the
    host name. A kept-alive connection is reused only for the same scheme, host name and port
    and only while its address is among the addresses checked for the attempt at hand; idle
    ones are dropped after ``IDLE_S``. Redirects are not followed and no proxy is used (a proxy
    would resolve the name itself). Built on :mod:`http.client`, which costs the posting threads
    a fraction of the CPU a general-purpose client does. Thread-safe.
    """

    #: Seconds an idle connection is kept (receivers commonly close theirs after 5 s).
    IDLE_S = 4.0
    #: Idle connections kept per host name.
    MAX_IDLE = 32
    #: Bytes of a receiver's answer read (the rest is dropped with the connection).
    MAX_ANSWER_BYTES = 64 * 1024

    def __init__(self, timeout_s: float, user_agent: str = "rutas-alerts/1",
                 tls: ssl.SSLContext | None = None) -> None:
        self.timeout_s = timeout_s
        self.user_agent = user_agent
        # the system's trusted certificates, the host name checked (check_hostname)
        self._tls = tls or ssl.create_default_context()
        self._idle: dict[tuple[str, str, int], list[_PinnedConnection]] = {}
        self._lock = threading.Lock()
        self._swept = time.monotonic()

    def _reuse(self, target: Target) -> _PinnedConnection | None:
        now = time.monotonic()
        with self._lock:
            idle = self._idle.get((target.scheme, target.host, target.port), [])
            while idle:
                conn = idle.pop()
                if now - conn.idle_since < self.IDLE_S and conn.address in target.addresses:
                    return conn
                conn.close()
        return None

    def _keep(self, target: Target, conn: _PinnedConnection) -> None:
        now = conn.idle_since = time.monotonic()
        expired: list[_PinnedConnection] = []
        with self._lock:
            if now - self._swept > self.IDLE_S:  # hosts not posted to again lose theirs too
                self._swept = now
                for key, idle in list(self._idle.items()):
                    expired += [c for c in idle if now - c.idle_since >= self.IDLE_S]
                    idle[:] = [c for c in idle if now - c.idle_since < self.IDLE_S]
                    if not idle:
                        del self._idle[key]
            idle = self._idle.setdefault((target.scheme, target.host, target.port), [])
            kept = len(idle) < self.MAX_IDLE
            if kept:
                idle.append(conn)
        for old in expired if kept else [*expired, conn]:
            old.close()

    def _exchange(self, conn: _PinnedConnection, target: Target, body: bytes,
                  headers: Mapping[str, str]) -> Answer:
        conn.request("POST", target.path, body=body, headers={"user-agent": self.user_agent, **headers})
        response = conn.getresponse()
        response.read(self.MAX_ANSWER_BYTES)
        answer = Answer(response.status, response.getheader("retry-after"))
        if response.isclosed() and not response.will_close:
            self._keep(target, conn)
        else:
            conn.close()
        return answer

    def post(self, target: Target, body: bytes, headers: Mapping[str, str]) -> Answer:
        """POST ``body`` to the target: on a kept-alive connection, or to the first checked address to answer.

        Raises
        ------
        OSError, http.client.HTTPException
            No checked address accepted the connection, or the exchange failed (timeout, reset,
            TLS or protocol error).
        """
        kept = self._reuse(target)
        if kept is not None:
            try:
                return self._exchange(kept, target, body, headers)
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                # the receiver closed the idle connection: the message goes again on a new one
                # (receivers drop repeated webhook-ids)
                kept.close()
            except BaseException:
                kept.close()
                raise
        tls = self._tls if target.scheme == "https" else None
        last = len(target.addresses) - 1
        for i, address in enumerate(target.addresses):
            conn = _PinnedConnection(target, address, self.timeout_s, tls)
            try:
                conn.connect()
            except OSError:
                conn.close()
                if i == last:
                    raise
                continue  # nothing was sent: try the next checked address
            try:
                return self._exchange(conn, target, body, headers)
            except BaseException:
                conn.close()
                raise
        raise AssertionError("a checked target has at least one address")

    def close(self) -> None:
        """Close every idle connection."""
        with self._lock:
            for idle in self._idle.values():
                for conn in idle:
                    conn.close()
            self._idle.clear()
