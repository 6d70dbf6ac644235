"""HS256 JWTs that name the job owner (docs/design.md §10).

The app's own backend mints tokens; the gateway only verifies them. ``sub`` is the owner and
``exp`` is required, so a token can never outlive its TTL. The algorithm is pinned to HS256 on
verify: a token's header never chooses how it is checked (no ``alg: none``, no HS512/RS256
confusion). Every PyJWT failure becomes ``Unauthorized`` with a message a client can act on;
an expired token says exactly ``token expired`` so clients know to refresh rather than give up.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from typing import Any

import jwt
from jwt.algorithms import HMACAlgorithm
from jwt.exceptions import (
    DecodeError,
    ExpiredSignatureError,
    InvalidAlgorithmError,
    InvalidKeyError,
    InvalidSignatureError,
    InvalidSubjectError,
    MissingRequiredClaimError,
    PyJWTError,
)
from progress_core.errors import BadRequest, Unauthorized
from progress_core.models import check_owner

__all__ = ["ALGORITHM", "MIN_SECRET_BYTES", "Claims", "check_secret", "issue_token", "verify_token"]

ALGORITHM = "HS256"
# RFC 7518 §3.2: an HS256 key must be at least as long as the hash output (256 bits).
MIN_SECRET_BYTES = 32
_REQUIRED_CLAIMS = ["exp", "sub"]


@dataclass(frozen=True, slots=True)
class Claims:
    """What a verified token says: who the caller is and until when."""

    sub: str
    exp: int


@functools.lru_cache(maxsize=8)
def check_secret(secret: str) -> bytes:
    """Reject secrets PyJWT would only warn about (short) or refuse (PEM/JWK-shaped keys).

    Cached: every token verification needs the checked key, and checking it scans the key for
    PEM/SSH shapes (a few percent of a WebSocket connect). A refused secret raises every time.
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
    """Mint a token for owner ``sub`` valid for ``ttl_s`` seconds from ``now`` (default: now)."""
    key = check_secret(secret)
    owner = check_owner(sub)
    if isinstance(ttl_s, bool) or not isinstance(ttl_s, int) or ttl_s <= 0:
        raise BadRequest(f"ttl must be a positive number of seconds, got {ttl_s!r}")
    issued_at = int(time.time() if now is None else now)
    payload = {"sub": owner, "iat": issued_at, "exp": issued_at + ttl_s}
    return jwt.encode(payload, key, algorithm=ALGORITHM)


def verify_token(secret: str, token: str, *, leeway_s: float = 5.0) -> Claims:
    """Check signature, algorithm, ``exp`` and ``sub``; raise ``Unauthorized`` on any failure."""
    key = check_secret(secret)
    try:
        payload: dict[str, Any] = jwt.decode(
            token,
            key,
            algorithms=[ALGORITHM],
            leeway=leeway_s,
            options={"require": _REQUIRED_CLAIMS, "enforce_minimum_key_length": True},
        )
    except ExpiredSignatureError as exc:
        raise Unauthorized("token expired") from exc
    except InvalidAlgorithmError as exc:
        raise Unauthorized(f"token algorithm is not allowed; only {ALGORITHM} is") from exc
    except InvalidSignatureError as exc:
        raise Unauthorized("token signature is invalid") from exc
    except MissingRequiredClaimError as exc:
        raise Unauthorized(f"token has no {exc.claim!r} claim") from exc
    except InvalidSubjectError as exc:
        raise Unauthorized("token 'sub' claim must be a non-empty string") from exc
    except DecodeError as exc:
        raise Unauthorized(f"token is malformed: {exc}") from exc
    except PyJWTError as exc:
        raise Unauthorized(f"token is invalid: {exc}") from exc
    return Claims(sub=_owner_claim(payload["sub"]), exp=_exp_claim(payload["exp"]))


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
