"""progress_gateway.auth: the round trip, and every way a token must be refused."""

from __future__ import annotations

import base64
import dataclasses
import json
import time

import jwt
import pytest

from progress_core.errors import BadRequest, Unauthorized
from progress_gateway.auth import MIN_SECRET_BYTES, Claims, issue_token, verify_token

SECRET = "s3cret-for-tests-" + "x" * 32
OTHER_SECRET = "another-secret-" + "y" * 32


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def forge(header: dict[str, object], payload: dict[str, object], signature: bytes = b"") -> str:
    """Build a compact JWS by hand, so the header can say anything."""
    parts = [json.dumps(header).encode(), json.dumps(payload).encode()]
    return ".".join([*(b64url(part) for part in parts), b64url(signature)])


def future() -> int:
    return int(time.time()) + 3600


def rejected(token: str, secret: str = SECRET, **kwargs: float) -> Unauthorized:
    with pytest.raises(Unauthorized) as info:
        verify_token(secret, token, **kwargs)
    assert info.value.status_code == 401
    assert info.value.code == "unauthorized"
    return info.value


# -- the happy path ----------------------------------------------------------------------------


def test_round_trip_returns_sub_and_exp() -> None:
    before = int(time.time())
    claims = verify_token(SECRET, issue_token(SECRET, "alice", ttl_s=120))
    assert claims.sub == "alice"
    assert before + 120 <= claims.exp <= int(time.time()) + 120


def test_issue_uses_now_for_iat_and_exp() -> None:
    now = time.time() + 0.9
    token = issue_token(SECRET, "alice", ttl_s=60, now=now)
    payload = jwt.decode(token, options={"verify_signature": False})
    assert payload == {"sub": "alice", "iat": int(now), "exp": int(now) + 60}
    assert jwt.get_unverified_header(token)["alg"] == "HS256"


def test_claims_are_frozen() -> None:
    claims = verify_token(SECRET, issue_token(SECRET, "bob"))
    assert claims == Claims(sub="bob", exp=claims.exp)
    with pytest.raises(dataclasses.FrozenInstanceError):
        claims.sub = "mallory"  # type: ignore[misc]


def test_token_from_another_issuer_with_the_same_secret_is_accepted() -> None:
    # The app's backend mints tokens (docs/design.md §10): any HS256 token with sub + exp will do.
    exp = future()
    token = jwt.encode({"sub": "carol", "exp": exp}, SECRET, algorithm="HS256")
    assert verify_token(SECRET, token) == Claims(sub="carol", exp=exp)


def test_recently_expired_token_is_within_leeway() -> None:
    token = issue_token(SECRET, "alice", ttl_s=60, now=time.time() - 62)
    assert verify_token(SECRET, token).sub == "alice"
    assert "expired" in rejected(token, leeway_s=0).message


# -- algorithm pinning -------------------------------------------------------------------------


@pytest.mark.parametrize("alg", ["none", "None", "NONE", ""])
def test_alg_none_is_rejected(alg: str) -> None:
    token = forge({"alg": alg, "typ": "JWT"}, {"sub": "alice", "exp": future()})
    error = rejected(token)
    assert "algorithm" in error.message
    assert isinstance(error.__cause__, jwt.InvalidAlgorithmError)


def test_missing_alg_header_is_rejected() -> None:
    token = forge({"typ": "JWT"}, {"sub": "alice", "exp": future()}, b"sig")
    assert "algorithm" in rejected(token).message


def test_hs512_token_with_the_right_secret_is_rejected() -> None:
    long_secret = "z" * 64  # HS512 wants a 64-byte key; PyJWT warns below that.
    token = jwt.encode({"sub": "alice", "exp": future()}, long_secret, algorithm="HS512")
    assert jwt.decode(token, long_secret, algorithms=["HS512"])["sub"] == "alice"
    assert "only HS256" in rejected(token, secret=long_secret).message


def test_rs256_header_is_rejected() -> None:
    token = forge({"alg": "RS256", "typ": "JWT"}, {"sub": "alice", "exp": future()}, b"x" * 256)
    error = rejected(token)
    assert "algorithm" in error.message
    assert isinstance(error.__cause__, jwt.InvalidAlgorithmError)


# -- signature ---------------------------------------------------------------------------------


def test_token_signed_with_another_key_is_rejected() -> None:
    token = issue_token(OTHER_SECRET, "alice")
    error = rejected(token)
    assert error.message == "token signature is invalid"
    assert isinstance(error.__cause__, jwt.InvalidSignatureError)


def test_tampered_payload_is_rejected() -> None:
    header, _, signature = issue_token(SECRET, "alice").split(".")
    payload = b64url(json.dumps({"sub": "mallory", "exp": future()}).encode())
    assert rejected(f"{header}.{payload}.{signature}").message == "token signature is invalid"


# -- expiry ------------------------------------------------------------------------------------


def test_expired_token_says_token_expired() -> None:
    token = issue_token(SECRET, "alice", ttl_s=60, now=time.time() - 3600)
    error = rejected(token)
    assert error.message == "token expired"
    assert isinstance(error.__cause__, jwt.ExpiredSignatureError)


def test_token_issued_in_the_future_is_rejected() -> None:
    token = issue_token(SECRET, "alice", now=time.time() + 3600)
    assert "not yet valid" in rejected(token).message


# -- claims ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "claim"),
    [({"sub": "alice"}, "exp"), ({"exp": 4102444800}, "sub"), ({}, "exp")],
)
def test_missing_claim_is_named(payload: dict[str, object], claim: str) -> None:
    error = rejected(jwt.encode(payload, SECRET, algorithm="HS256"))
    assert error.message == f"token has no {claim!r} claim"
    assert isinstance(error.__cause__, jwt.MissingRequiredClaimError)


@pytest.mark.parametrize("sub", ["", 42, None, ["alice"], {"id": "alice"}, "a b", "{alice}"])
def test_bad_sub_is_rejected(sub: object) -> None:
    token = jwt.encode({"sub": sub, "exp": future()}, SECRET, algorithm="HS256")
    assert "'sub'" in rejected(token).message


@pytest.mark.parametrize(
    ("exp", "message"),
    [
        ("4102444800", "token 'exp' claim must be a number"),
        ("soon", "token is malformed: Expiration Time claim (exp) must be an integer."),
        (None, "token has no 'exp' claim"),
        (True, "token expired"),  # PyJWT reads True as 1970-01-01T00:00:01Z
    ],
)
def test_non_numeric_exp_is_rejected(exp: object, message: str) -> None:
    token = jwt.encode({"sub": "alice", "exp": exp}, SECRET, algorithm="HS256")
    assert rejected(token).message == message


# -- garbage -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "token",
    [
        "",
        "not-a-token",
        "a.b.c",
        "a.b",
        "....",
        "Bearer " + "e30.e30.e30",
        forge({"alg": "HS256"}, {"sub": "alice"})[:-1] + "!!!",
        b64url(b"{not json") + "." + b64url(b"{}") + "." + b64url(b"sig"),
    ],
)
def test_garbage_is_rejected_as_malformed(token: str) -> None:
    error = rejected(token)
    assert error.message.startswith("token is malformed")
    assert isinstance(error.__cause__, jwt.DecodeError)


# -- secrets and issue-time input --------------------------------------------------------------


@pytest.mark.parametrize("secret", ["", "short", "x" * (MIN_SECRET_BYTES - 1), "é" * 15])
def test_short_secret_is_refused_at_issue_and_verify(secret: str) -> None:
    with pytest.raises(BadRequest, match="at least 32 bytes"):
        issue_token(secret, "alice")
    with pytest.raises(BadRequest, match="at least 32 bytes"):
        verify_token(secret, issue_token(SECRET, "alice"))


def test_secret_length_counts_bytes() -> None:
    for secret in ["x" * MIN_SECRET_BYTES, "é" * 16]:
        assert verify_token(secret, issue_token(secret, "alice")).sub == "alice"


def test_jwk_shaped_secret_is_refused() -> None:
    secret = json.dumps({"kty": "oct", "k": "x" * 43})
    with pytest.raises(BadRequest, match="not usable"):
        issue_token(secret, "alice")


@pytest.mark.parametrize("sub", ["", "a b", "x" * 257, "{tag}"])
def test_issue_refuses_an_invalid_owner(sub: str) -> None:
    with pytest.raises(BadRequest, match="owner"):
        issue_token(SECRET, sub)


@pytest.mark.parametrize("ttl", [0, -1, True])
def test_issue_refuses_a_non_positive_ttl(ttl: int) -> None:
    with pytest.raises(BadRequest, match="ttl"):
        issue_token(SECRET, "alice", ttl_s=ttl)
