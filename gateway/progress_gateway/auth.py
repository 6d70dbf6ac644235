"""JWTs that name the job owner: HS256 with a shared secret, RS256/ES256 with public keys.

The app's own backend (or its identity provider) mints tokens; the gateway only verifies them
(docs/auth.md). ``sub`` is the owner and ``exp`` is required, so a token can never outlive its
TTL; ``aud`` and ``iss`` are checked when configured. The algorithms a gateway accepts come from
its configuration, and each key verifies only its own algorithm: the shared secret HS256, an RSA
key RS256, a P-256 key ES256. A token's header never chooses how it is checked — no ``alg:
none``, and no HS256 token "signed" with a public key. Every failure becomes ``Unauthorized``
with a message a client can act on; an expired token says exactly ``token expired`` so clients
know to refresh rather than give up.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field
from typing import Any

import jwt
from jwt.algorithms import HMACAlgorithm
from jwt.exceptions import (
    DecodeError,
    ExpiredSignatureError,
    InvalidAlgorithmError,
    InvalidAudienceError,
    InvalidIssuerError,
    InvalidKeyError,
    InvalidSignatureError,
    InvalidSubjectError,
    MissingRequiredClaimError,
    PyJWTError,
)

from progress_core.errors import BadRequest, Unauthorized
from progress_core.models import check_owner
from progress_gateway.jwks import JwksCache, JwksOptions, PublicKey

__all__ = [
    "ALGORITHM",
    "ALGORITHMS",
    "MIN_SECRET_BYTES",
    "AuthConfig",
    "Claims",
    "KeyRefreshNeeded",
    "TokenVerifier",
    "check_secret",
    "issue_token",
    "verify_token",
]

ALGORITHM = "HS256"  # what issue_token mints
ALGORITHMS = ("HS256", "RS256", "ES256")
# RFC 7518 §3.2: an HS256 key must be at least as long as the hash output (256 bits).
MIN_SECRET_BYTES = 32
LEEWAY_S = 5.0


@dataclass(frozen=True, slots=True)
class Claims:
    """What a verified token says: who the caller is and until when."""

    sub: str
    exp: int


class KeyRefreshNeeded(Exception):
    """The token names a ``kid`` the key set does not hold and a fetch is allowed now.

    Not a ``GatewayError``: it passes through the sans-I/O protocol to the connection, which
    awaits ``TokenVerifier.refresh_keys()`` and runs the same step again (once).
    """

    def __init__(self, kid: str) -> None:
        super().__init__(f"key id {kid!r} is not in the key set yet")
        self.kid = kid


@dataclass(frozen=True, slots=True)
class AuthConfig:
    """Where the keys come from and what a token must say; built from ``Settings``."""

    secret: str | None = None
    public_key: tuple[str, PublicKey] | None = None
    jwks_url: str | None = None
    # Empty: every algorithm a configured key verifies.
    algorithms: frozenset[str] = frozenset()
    audience: tuple[str, ...] = ()
    issuer: str | None = None
    leeway_s: float = LEEWAY_S
    jwks: JwksOptions = field(default_factory=JwksOptions)


@functools.lru_cache(maxsize=8)
def check_secret(secret: str) -> bytes:
    """Reject secrets PyJWT would only warn about (short) or refuse (PEM/JWK-shaped keys).

    Cached: checking the key scans it for PEM/SSH shapes (a few percent of a WebSocket
    connect). A refused secret raises every time.
    """
    key = secret.encode("utf-8")
    if len(key) < MIN_SECRET_BYTES:
        raise BadRequest(
            f"secret must be at least {MIN_SECRET_BYTES} bytes for {ALGORITHM}, got {len(key)}"
        )
    try:
        return HMACAlgorithm(HMACAlgorithm.SHA256).prepare_key(key)
    except InvalidKeyError as exc:
        raise BadRequest(f"secret is not usable as an {ALGORITHM} key: {exc}") from exc


def issue_token(secret: str, sub: str, ttl_s: int = 3600, *, now: float | None = None) -> str:
    """Mint an HS256 token for owner ``sub`` valid for ``ttl_s`` seconds from ``now``."""
    key = check_secret(secret)
    owner = check_owner(sub)
    if isinstance(ttl_s, bool) or not isinstance(ttl_s, int) or ttl_s <= 0:
        raise BadRequest(f"ttl must be a positive number of seconds, got {ttl_s!r}")
    issued_at = int(time.time() if now is None else now)
    payload = {"sub": owner, "iat": issued_at, "exp": issued_at + ttl_s}
    return jwt.encode(payload, key, algorithm=ALGORITHM)


def verify_token(secret: str, token: str, *, leeway_s: float = LEEWAY_S) -> Claims:
    """Verify an HS256 token with ``secret`` alone; raise ``Unauthorized`` on any failure."""
    return _hs256_verifier(secret, leeway_s).verify(token)


@functools.lru_cache(maxsize=8)
def _hs256_verifier(secret: str, leeway_s: float) -> TokenVerifier:
    return TokenVerifier(AuthConfig(secret=secret, leeway_s=leeway_s))


class TokenVerifier:
    """Verifies tokens against the configured keys; ``verify`` is the hot path (no I/O)."""

    def __init__(self, config: AuthConfig) -> None:
        self._secret = None if config.secret is None else check_secret(config.secret)
        self._public = config.public_key
        self.jwks: JwksCache | None = None
        usable = {"HS256"} if self._secret is not None else set()
        if self._public is not None:
            usable.add(self._public[0])
        if config.jwks_url is not None:
            usable |= {"RS256", "ES256"}
        wanted = config.algorithms or frozenset(usable)
        if not wanted:
            raise BadRequest("no key to verify tokens with: configure a secret or public keys")
        if unusable := wanted - usable:
            raise BadRequest(f"no configured key verifies {', '.join(sorted(unusable))}")
        self.algorithms = frozenset(wanted)
        self._only_secret = self.algorithms == {"HS256"}
        self._secret_key = self._secret or b""
        self._allowed = ", ".join(a for a in ALGORITHMS if a in self.algorithms)
        if config.jwks_url is not None:
            self.jwks = JwksCache(config.jwks_url, self.algorithms, config.jwks)
        self._audience = list(config.audience) or None
        self._issuer = config.issuer
        self._leeway_s = config.leeway_s
        required = ["exp", "sub"]
        if self._audience is not None:
            required.append("aud")
        if self._issuer is not None:
            required.append("iss")
        self._options: Any = {
            "require": required,
            "verify_aud": self._audience is not None,
            "enforce_minimum_key_length": True,
        }

    async def start(self) -> None:
        """Load the key set, if there is one (an unreachable one is logged, not fatal)."""
        if self.jwks is not None:
            await self.jwks.start()

    async def aclose(self) -> None:
        if self.jwks is not None:
            await self.jwks.aclose()

    async def refresh_keys(self) -> None:
        """After ``KeyRefreshNeeded``: fetch the key set (rate-limited, shared by callers)."""
        if self.jwks is not None:
            await self.jwks.refresh_for_unknown_kid()

    async def authenticate(self, token: str) -> Claims:
        """``verify``, fetching the key set first when the token names a key not loaded yet."""
        try:
            return self.verify(token)
        except KeyRefreshNeeded:
            await self.refresh_keys()
        return self.verify(token)

    def verify(self, token: str) -> Claims:
        """Check algorithm, signature, ``exp``, ``sub`` (and ``aud``/``iss`` when configured).

        Raises:
            Unauthorized: the token is refused; the message says why.
            KeyRefreshNeeded: its ``kid`` is unknown and the key set may be fetched now: await
                ``refresh_keys()`` and verify again.
        """
        key: bytes | PublicKey
        try:
            if self._only_secret:
                # One key, one algorithm: no need to read the header first (PyJWT checks alg).
                alg, key = "HS256", self._secret_key
            else:
                alg, key = self._key_for(jwt.get_unverified_header(token))
            payload: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[alg],
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway_s,
                options=self._options,
            )
        except PyJWTError as exc:
            raise _refusal(exc, self._allowed) from exc
        return Claims(sub=_owner_claim(payload["sub"]), exp=_exp_claim(payload["exp"]))

    def _key_for(self, header: dict[str, Any]) -> tuple[str, bytes | PublicKey]:
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self.algorithms:
            raise InvalidAlgorithmError("The specified alg value is not allowed")
        if alg == "HS256":
            assert self._secret is not None  # HS256 is only allowed with a secret
            return alg, self._secret
        if self._public is not None:
            return self._key_of_algorithm(alg, self._public)
        assert self.jwks is not None  # RS256/ES256 are only allowed with a key or a key set
        kid = header.get("kid")
        keys = self.jwks.keys
        if kid is None:
            if len(keys) != 1:
                raise _Refused(f"token has no 'kid' header and the key set holds {len(keys)} keys")
            return self._key_of_algorithm(alg, next(iter(keys.values())))
        if not isinstance(kid, str):
            raise DecodeError("Key ID header parameter must be a string")
        found = keys.get(kid)
        if found is not None:
            return self._key_of_algorithm(alg, found)
        if self.jwks.may_refresh():
            raise KeyRefreshNeeded(kid)
        if self.jwks.last_error is not None:
            raise _Refused(f"token key id {kid!r} is unknown (the key set could not be fetched)")
        raise _Refused(f"token key id {kid!r} is unknown")

    @staticmethod
    def _key_of_algorithm(alg: str, key: tuple[str, PublicKey]) -> tuple[str, PublicKey]:
        if key[0] != alg:
            raise _Refused(f"token algorithm {alg} does not match its key ({key[0]})")
        return key


class _Refused(PyJWTError):
    """A refusal the gateway decides itself, with the message the client gets."""


def _refusal(exc: PyJWTError, allowed: str) -> Unauthorized:
    if isinstance(exc, _Refused):
        return Unauthorized(str(exc))
    if isinstance(exc, ExpiredSignatureError):
        return Unauthorized("token expired")
    if isinstance(exc, InvalidAlgorithmError):
        verb = "are" if "," in allowed else "is"
        return Unauthorized(f"token algorithm is not allowed; only {allowed} {verb}")
    if isinstance(exc, InvalidSignatureError):
        return Unauthorized("token signature is invalid")
    if isinstance(exc, MissingRequiredClaimError):
        return Unauthorized(f"token has no {exc.claim!r} claim")
    if isinstance(exc, InvalidSubjectError):
        return Unauthorized("token 'sub' claim must be a non-empty string")
    if isinstance(exc, InvalidAudienceError):
        return Unauthorized("token audience ('aud') is not accepted here")
    if isinstance(exc, InvalidIssuerError):
        return Unauthorized("token issuer ('iss') is not accepted here")
    if isinstance(exc, DecodeError):
        return Unauthorized(f"token is malformed: {exc}")
    return Unauthorized(f"token is invalid: {exc}")


def _owner_claim(value: object) -> str:
    try:
        return check_owner(value)
    except BadRequest as exc:
        raise Unauthorized(f"token 'sub' claim is not a valid owner: {exc.message}") from exc


def _exp_claim(value: object) -> int:
    # PyJWT accepts anything int() takes (even "123"); RFC 7519 NumericDate is a JSON number.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Unauthorized("token 'exp' claim must be a number")
    return int(value)
