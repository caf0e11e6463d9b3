"""Who is calling: API keys (stored hashed) and JWT bearer tokens, turned into a database scope.

A key looks like ``rutas_<key id>_<secret>``; only the SHA-256 of the secret is stored, looked up
by the public key id and compared in constant time. JWTs are verified with the configured
secret (HS256) or public key (RS256/ES256), never both, so one cannot be passed off as the other;
their claims ``role`` and ``country`` (and ``sub``) say who the caller is.

Verified callers are cached in the process for ``KEY_CACHE_SECONDS``. Revoking a key or changing
a sharing agreement sends a PostgreSQL notification (``NOTIFY rutas_keys``, delivered when the
change commits) that every server process listens to (:class:`RevocationListener`) and that
drops the cached callers at once; while a process is not listening, it does not use its cache.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
import threading
import time
from dataclasses import dataclass, field

import jwt
import psycopg
import sqlalchemy as sa
from sqlalchemy.engine import Engine, make_url

from geodata.db import SYSTEM, Scope, scoped
from geodata.errors import InputError, RutasError
from geodata.settings import Settings
from geodata.tables import API_ROLES

log = logging.getLogger("rutas.api")

_COUNTRY = re.compile(r"^[A-Z]{3}$")
_KEY = re.compile(r"^rutas_([0-9a-f]{12})_([A-Za-z0-9_-]{20,100})$")
#: Seconds a verified key stays cached in the process (revocations and agreement changes drop it at once).
KEY_CACHE_SECONDS = 30.0
#: The notification channel of key revocations (payload: the key id) and agreement changes (``*``).
KEYS_CHANNEL = "rutas_keys"
#: Payload that drops every cached caller (the partners of a country changed).
EVERY_KEY = "*"


@dataclass(frozen=True)
class Principal:
    """An authenticated caller: role, country (ISO3, or None for region-wide roles) and partners.

    ``partners`` maps each country that shares with the caller's country to the level agreed
    (``aggregate`` or ``detail``), read from ``sharing_agreements``.
    """

    subject: str
    role: str
    country: str | None
    partners: dict[str, str] = field(default_factory=dict)

    def scope(self) -> Scope:
        """The row-level-security scope of this caller's transactions."""
        return Scope(role=self.role, country=self.country, partners=dict(self.partners),
                     user=self.subject)


def unauthorized(message: str, message_es: str) -> RutasError:
    """A 401 error: no or bad credentials."""
    return RutasError(message, message_es, code="unauthorized")


def forbidden(message: str, message_es: str) -> RutasError:
    """A 403 error: known caller, not allowed."""
    return RutasError(message, message_es, code="forbidden")


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _check_role_country(role: str, country: str | None) -> str | None:
    if role not in API_ROLES:
        raise InputError(
            f"Role {role!r} is not known: use one of {', '.join(API_ROLES)}.",
            f"El rol {role!r} no existe: use uno de {', '.join(API_ROLES)}.",
            code="bad_parameter",
        )
    if country is not None:
        country = country.strip().upper()
        if not _COUNTRY.match(country):
            raise InputError(
                f"Country {country!r} must be an ISO 3166-1 alpha-3 code such as COL or VEN.",
                f"El país {country!r} debe ser un código ISO 3166-1 alfa-3 como COL o VEN.",
                code="bad_parameter",
            )
    elif role not in ("admin", "analyst"):
        raise InputError(
            f"Role {role!r} works for one country: add --country ISO3 (e.g. --country COL).",
            f"El rol {role!r} trabaja para un país: añada --country ISO3 (p. ej. --country COL).",
            code="bad_parameter",
        )
    return country


def create_key(engine: Engine, role: str, country: str | None = None, label: str = "") -> str:
    """Create an API key for ``role`` (and ``country``), store its hash and return the key.

    The key is shown once: only its SHA-256 is kept.
    """
    country = _check_role_country(role, country)
    key_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    with scoped(engine, SYSTEM) as conn:
        conn.execute(
            sa.text("INSERT INTO api_keys (key_id, key_hash, role, country, label) "
                    "VALUES (:key_id, :key_hash, :role, :country, :label)"),
            {"key_id": key_id, "key_hash": _hash(secret), "role": role, "country": country,
             "label": label},
        )
    return f"rutas_{key_id}_{secret}"


def revoke_key(engine: Engine, key: str) -> bool:
    """Revoke an API key, given whole or as its public id (``rutas_<id>_...`` or ``<id>``).

    Returns False when no active key has that id. Every server listening (:class:`RevocationListener`)
    drops the key from its cache when the revocation commits.
    """
    match = _KEY.match(key.strip())
    key_id = match.group(1) if match else key.strip()
    with scoped(engine, SYSTEM) as conn:
        done = conn.execute(
            sa.text("UPDATE api_keys SET revoked_at = now() WHERE key_id = :key_id AND revoked_at IS NULL"),
            {"key_id": key_id},
        )
        if done.rowcount:
            _notify(conn, key_id)
    return bool(done.rowcount)


def _notify(conn: sa.Connection, payload: str) -> None:
    # delivered to the listeners when the transaction commits, never before
    conn.execute(sa.text("SELECT pg_notify(:channel, :payload)"),
                 {"channel": KEYS_CHANNEL, "payload": payload})


def set_agreement(engine: Engine, owner_country: str, partner_country: str, level: str | None) -> None:
    """Record (or with ``level=None`` remove) what ``partner_country`` sees of ``owner_country``."""
    owner = _check_role_country("steward", owner_country)
    partner = _check_role_country("steward", partner_country)
    if level not in (None, "aggregate", "detail"):
        raise InputError(f"Level {level!r} must be aggregate or detail.",
                         f"El nivel {level!r} debe ser aggregate o detail.", code="bad_parameter")
    with scoped(engine, SYSTEM) as conn:
        conn.execute(sa.text("DELETE FROM sharing_agreements "
                             "WHERE owner_country = :o AND partner_country = :p"),
                     {"o": owner, "p": partner})
        if level is not None:
            conn.execute(sa.text("INSERT INTO sharing_agreements (owner_country, partner_country, level) "
                                 "VALUES (:o, :p, :level)"), {"o": owner, "p": partner, "level": level})
        _notify(conn, EVERY_KEY)  # cached callers carry their partners: drop them all


class Authenticator:
    """Turns an ``Authorization`` header into a :class:`Principal` (with a short key cache).

    The cache is used only while :attr:`listening` (a :class:`RevocationListener` holds its
    ``LISTEN`` connection and calls :meth:`forget`); a caller verified while a notification
    arrived is not cached, so a revocation can never be overwritten by a lookup that preceded it.
    """

    def __init__(self, engine: Engine, settings: Settings) -> None:
        self.engine = engine
        self.settings = settings
        self._cache: dict[str, tuple[float, Principal]] = {}
        self._lock = threading.Lock()
        #: Bumped by every notification: a lookup that saw another generation is not cached.
        self._generation = 0
        #: Whether revocations reach this process now (else every request is checked in the database).
        self.listening = False

    def forget(self, payload: str) -> None:
        """Drop the cached callers of key id ``payload`` (every cached caller for ``*`` or ``""``)."""
        prefix = f"rutas_{payload}_"
        with self._lock:
            self._generation += 1
            if payload in (EVERY_KEY, ""):
                self._cache.clear()
            else:
                for credential in [c for c in self._cache if c.startswith(prefix)]:
                    del self._cache[credential]

    def set_listening(self, listening: bool) -> None:
        """Use the cache (True) or not (False); either way what is cached now is dropped."""
        with self._lock:
            self._generation += 1
            self._cache.clear()
            self.listening = listening

    def __call__(self, authorization: str | None) -> Principal:
        """The caller named by ``Authorization: Bearer <key or token>``; raises 401 otherwise."""
        if not authorization:
            raise unauthorized(
                "Authentication required: send 'Authorization: Bearer <API key or token>'. "
                "An administrator creates keys with 'rutas keys create'.",
                "Se requiere autenticación: envíe 'Authorization: Bearer <clave o token>'. "
                "Un administrador crea claves con 'rutas keys create'.",
            )
        scheme, _, credential = authorization.strip().partition(" ")
        credential = credential.strip()
        if scheme.lower() != "bearer" or not credential:
            raise unauthorized("The Authorization header must be 'Bearer <API key or token>'.",
                               "La cabecera Authorization debe ser 'Bearer <clave o token>'.")
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get(credential) if self.listening else None
            generation = self._generation
        if cached and cached[0] > now:
            return cached[1]
        if credential.startswith("rutas_"):
            principal = self._from_key(credential)
        else:
            principal = self._from_jwt(credential)
        principal = Principal(principal.subject, principal.role, principal.country,
                              self._partners(principal.country))
        with self._lock:
            if self.listening and generation == self._generation:
                if len(self._cache) > 10_000:
                    self._cache.clear()
                self._cache[credential] = (now + KEY_CACHE_SECONDS, principal)
        return principal

    def _from_key(self, key: str) -> Principal:
        match = _KEY.match(key)
        bad = unauthorized("The API key is not valid or was revoked. Ask an administrator for a new one.",
                           "La clave de API no es válida o fue revocada. Pida una nueva a un administrador.")
        if not match:
            raise bad
        key_id, secret = match.groups()
        with scoped(self.engine, SYSTEM) as conn:
            row = conn.execute(
                sa.text("SELECT key_hash, role, country FROM api_keys "
                        "WHERE key_id = :key_id AND revoked_at IS NULL"),
                {"key_id": key_id},
            ).one_or_none()
        if row is None or not hmac.compare_digest(row.key_hash, _hash(secret)):
            raise bad
        country = row.country.strip() if row.country else None
        return Principal(subject=f"key:{key_id}", role=row.role, country=country)

    def _from_jwt(self, token: str) -> Principal:
        if self.settings.jwt_public_key:
            key, algorithms = self.settings.jwt_public_key, ["RS256", "ES256"]
        elif self.settings.jwt_secret:
            key, algorithms = self.settings.jwt_secret, ["HS256"]
        else:
            raise unauthorized("This server accepts API keys only (no JWT secret or public key is set).",
                               "Este servidor sólo acepta claves de API (no hay secreto JWT configurado).")
        try:
            claims = jwt.decode(token, key, algorithms=algorithms, audience=self.settings.jwt_audience,
                                options={"require": ["exp", "sub"],
                                         "verify_aud": self.settings.jwt_audience is not None})
        except jwt.ExpiredSignatureError:
            raise unauthorized("The token has expired: get a new one.",
                               "El token ha caducado: obtenga uno nuevo.") from None
        except jwt.PyJWTError:
            raise unauthorized("The token is not valid (signature, audience or claims).",
                               "El token no es válido (firma, audiencia o campos).") from None
        role = str(claims.get("role", ""))
        raw_country = claims.get("country")
        try:
            country = _check_role_country(role, str(raw_country) if raw_country else None)
        except InputError as exc:
            raise forbidden(f"The token's claims are not usable: {exc.message}",
                            f"Los campos del token no sirven: {exc.message_es}") from None
        return Principal(subject=f"jwt:{claims['sub']}", role=role, country=country)

    def _partners(self, country: str | None) -> dict[str, str]:
        if country is None:
            return {}
        with scoped(self.engine, SYSTEM) as conn:
            rows = conn.execute(
                sa.text("SELECT owner_country, level FROM sharing_agreements WHERE partner_country = :c"),
                {"c": country},
            ).all()
        return {r.owner_country.strip(): r.level for r in rows}


class RevocationListener:
    """A thread holding a ``LISTEN rutas_keys`` connection that drops revoked keys from a cache.

    Started and stopped with the app (its lifespan). When the connection fails, the authenticator
    stops caching until the listener is back (it retries every ``retry_s`` seconds).
    """

    def __init__(self, url: str, authenticator: Authenticator, retry_s: float = 1.0) -> None:
        self._conninfo = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
        self.authenticator = authenticator
        self.retry_s = retry_s
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rutas-key-revocations", daemon=True)

    def start(self, wait_s: float = 5.0) -> None:
        """Start listening; wait up to ``wait_s`` for the first ``LISTEN`` (no cache until then)."""
        self._thread.start()
        self._ready.wait(wait_s)

    def stop(self) -> None:
        """Stop listening and turn the cache off."""
        self._stop.set()
        self._thread.join(timeout=5)
        self.authenticator.set_listening(False)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with psycopg.connect(self._conninfo, autocommit=True) as conn:
                    conn.execute(f"LISTEN {KEYS_CHANNEL}")
                    # what was cached before could have missed a revocation: start afresh
                    self.authenticator.set_listening(True)
                    self._ready.set()
                    while not self._stop.is_set():
                        for note in conn.notifies(timeout=0.5):
                            self.authenticator.forget(note.payload)
            except psycopg.Error as error:
                log.warning("key revocations not received (%s): no key cache until listening again",
                            type(error).__name__)
            except Exception:  # never leave the cache on without the listener behind it
                log.exception("key revocation listener failed: no key cache until listening again")
            self.authenticator.set_listening(False)
            self._stop.wait(self.retry_s)


class RateLimiter:
    """A token bucket per caller: ``per_minute`` requests a minute, with a burst of a tenth of that."""

    def __init__(self, per_minute: int) -> None:
        self.rate = per_minute / 60.0
        self.burst = max(10.0, per_minute / 10.0)
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def allow(self, subject: str) -> bool:
        """Take one token from ``subject``'s bucket; False when it is empty."""
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(subject, (self.burst, now))
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            if tokens < 1.0:
                self._buckets[subject] = (tokens, now)
                return False
            self._buckets[subject] = (tokens - 1.0, now)
            return True
