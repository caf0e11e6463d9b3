"""Standard Webhooks signing and verification, and the guard against internal webhook targets.

A message is signed as the Standard Webhooks spec says: ``v1,`` + base64 of HMAC-SHA256, keyed by
the bytes after ``whsec_`` (base64), over ``"{webhook-id}.{webhook-timestamp}.{body}"``. Receivers
verify with :func:`verify` (or any Standard Webhooks library) and drop repeated ``webhook-id``\\ s:
delivery is at least once.

The target guard resolves the URL's host and refuses it when any address it resolves to is
loopback, private, link-local (cloud metadata), multicast, reserved or unspecified, unless
``settings.webhook_allowed_hosts`` names the host or a network holding the address.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import secrets
import socket
import time
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


def check_target(url: str, settings: Settings) -> list[IPAddress]:
    """Resolve a webhook URL and return its addresses, refusing internal targets not allowed.

    Raises
    ------
    InputError
        The URL is not http(s), has no host, does not resolve, or resolves to an internal address
        that ``RUTAS_WEBHOOK_ALLOWED_HOSTS`` does not name.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _refuse(url, "use an http:// or https:// URL with a host name.",
                      "use una URL http:// o https:// con nombre de host.")
    if parts.username or parts.password:
        raise _refuse(url, "credentials in the URL are not accepted; the signature authenticates us.",
                      "no se aceptan credenciales en la URL; la firma nos autentica.")
    host = parts.hostname.lower().rstrip(".")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, ValueError):
        raise _refuse(url, f"the host {host!r} does not resolve; check the name.",
                      f"el host {host!r} no se resuelve; revise el nombre.") from None
    addresses = sorted({ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos}, key=str)
    hosts, networks = _allowed(settings)
    for address in addresses:
        if not internal(address) or host in hosts or any(address in net for net in networks):
            continue
        raise _refuse(
            url, f"the host resolves to the internal address {address}, which webhooks may not reach. "
            "An administrator can allow it in RUTAS_WEBHOOK_ALLOWED_HOSTS.",
            f"el host se resuelve a la dirección interna {address}, que los webhooks no pueden alcanzar. "
            "Un administrador puede permitirla en RUTAS_WEBHOOK_ALLOWED_HOSTS.")
    return addresses
