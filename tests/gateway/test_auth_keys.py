"""RS256/ES256 tokens from a public key or a JWKS, against real gateway processes.

A local JWKS server (a real HTTP server on a free port) serves generated RSA and P-256 keys and
counts its fetches; gateways are configured with its URL (or a PEM file) and checked over HTTP
and WebSocket (token in the query string and in an auth frame): valid tokens are accepted, every
wrong one refused, rotation picked up, and floods of unknown key ids cost one fetch.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from pydantic import ValidationError
from websockets.exceptions import ConnectionClosed

from progress_core.errors import BadRequest, Unauthorized
from progress_gateway.auth import AuthConfig, TokenVerifier
from progress_gateway.jwks import JwksCache, JwksOptions
from progress_gateway.settings import Settings
from tests.support.gateway_server import SECRET, GatewayServer, embedded_gateway
from tests.support.redis_server import wait_until
from tests.support.ws_client import WsClient

ROOT = Path(__file__).resolve().parents[2]
OWNER = "alice"
AUDIENCE = "progress"
ISSUER = "https://issuer.test"

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


@dataclass
class SigningKey:
    kid: str
    alg: str
    private: PrivateKey

    @classmethod
    def rsa(cls, kid: str) -> SigningKey:
        return cls(kid, "RS256", rsa.generate_private_key(public_exponent=65537, key_size=2048))

    @classmethod
    def ec(cls, kid: str) -> SigningKey:
        return cls(kid, "ES256", ec.generate_private_key(ec.SECP256R1()))

    def jwk(self) -> dict[str, Any]:
        algorithm = RSAAlgorithm if self.alg == "RS256" else ECAlgorithm
        jwk: dict[str, Any] = algorithm.to_jwk(self.private.public_key(), as_dict=True)
        return {**jwk, "kid": self.kid, "alg": self.alg, "use": "sig"}

    def public_pem(self) -> bytes:
        return self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def private_pem(self) -> bytes:
        return self.private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def sign(self, kid: str | None = "", **claims: object) -> str:
        headers = None if kid is None else {"kid": kid or self.kid}
        return jwt.encode(good_claims(**claims), self.private, algorithm=self.alg, headers=headers)


def good_claims(**claims: object) -> dict[str, object]:
    now = int(time.time())
    base: dict[str, object] = {"sub": OWNER, "exp": now + 600, "aud": AUDIENCE, "iss": ISSUER}
    return {key: value for key, value in {**base, **claims}.items() if value is not None}


def forge(header: dict[str, object], claims: dict[str, object], key: bytes | None) -> str:
    """A compact JWS built by hand, so the header can say anything; HMAC-SHA256 with ``key``."""
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"
    signature = b"" if key is None else hmac.digest(key, signing_input.encode(), hashlib.sha256)
    return f"{signing_input}.{b64url(signature)}"


@dataclass
class JwksServer:
    """A real HTTP server that serves ``keys`` as a JWKS at ``/jwks.json`` and counts fetches.

    ``status`` other than 200 answers that status; ``body`` overrides the document; ``hold``
    makes every request wait until it is set (a slow server)."""

    keys: list[SigningKey]
    status: int = 200
    body: bytes | None = None
    hold: threading.Event | None = None
    fetches: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}/jwks.json"

    def document(self) -> bytes:
        if self.body is not None:
            return self.body
        return json.dumps({"keys": [key.jwk() for key in self.keys]}).encode()

    def __enter__(self) -> JwksServer:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with owner._lock:
                    owner.fetches += 1
                if owner.hold is not None:
                    owner.hold.wait(30)
                body = owner.document()
                self.send_response(owner.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet: the test asserts on ``fetches``, not on the access log."""

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.hold is not None:
            self.hold.set()
        assert self._server is not None
        self._server.shutdown()
        self._server.server_close()


# -- what a client sees ------------------------------------------------------------------------


def http_outcome(gateway: GatewayServer, token: str) -> tuple[int, str]:
    """Status of an authenticated route, and the refusal's description (empty on success)."""
    response = httpx.get(
        f"{gateway.url}/exports/active",
        headers={"Authorization": f"Bearer {token}"},
        timeout=20,
    )
    return response.status_code, response.headers.get("www-authenticate", "")


async def ws_outcome(gateway: GatewayServer, token: str, *, frame: bool) -> str | int:
    """``"ready"``, or the close code: token in the query string, or in an auth frame."""
    client = await WsClient.connect(gateway.ws_url, None if frame else token)
    try:
        if frame:
            await client.send({"op": "auth", "token": token})
        return str((await client.recv(20))["op"])
    except ConnectionClosed as closed:
        assert closed.rcvd is not None, "closed without a close frame"
        return closed.rcvd.code
    finally:
        await client.connection.close()


async def accepted_everywhere(gateway: GatewayServer, token: str) -> None:
    assert http_outcome(gateway, token) == (200, "")
    assert await ws_outcome(gateway, token, frame=False) == "ready"
    assert await ws_outcome(gateway, token, frame=True) == "ready"


async def refused_everywhere(gateway: GatewayServer, token: str, why: str) -> None:
    status, challenge = http_outcome(gateway, token)
    assert status == 401, challenge
    assert why in challenge, challenge
    assert await ws_outcome(gateway, token, frame=False) == 4401
    assert await ws_outcome(gateway, token, frame=True) == 4401


# -- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rsa_key() -> SigningKey:
    return SigningKey.rsa("rsa-1")


@pytest.fixture(scope="module")
def ec_key() -> SigningKey:
    return SigningKey.ec("ec-1")


@pytest.fixture(scope="module")
def jwks(rsa_key: SigningKey, ec_key: SigningKey) -> Iterator[JwksServer]:
    with JwksServer([rsa_key, ec_key]) as server:
        yield server


@pytest.fixture(scope="module")
def keyed(jwks: JwksServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayServer]:
    """HS256 with the shared secret and RS256/ES256 from the JWKS, ``aud`` and ``iss`` checked;
    an unknown kid refetches the set at most once an hour."""
    with embedded_gateway(
        tmp_path_factory.mktemp("keyed"),
        jwks_url=jwks.url,
        jwt_audience=AUDIENCE,
        jwt_issuer=ISSUER,
        jwks_min_refresh_s="3600",
    ) as gateway:
        yield gateway


# -- through a JWKS ----------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["rsa_key", "ec_key"])
async def test_rs256_and_es256_tokens_are_accepted(
    which: str, keyed: GatewayServer, jwks: JwksServer, request: pytest.FixtureRequest
) -> None:
    key: SigningKey = request.getfixturevalue(which)
    before = jwks.fetches
    await accepted_everywhere(keyed, key.sign())
    assert jwks.fetches == before, "a known kid must not fetch the key set"


async def test_hs256_with_the_secret_is_still_accepted(keyed: GatewayServer) -> None:
    await accepted_everywhere(keyed, jwt.encode(good_claims(), SECRET, algorithm="HS256"))


def refused_tokens(rsa_key: SigningKey, ec_key: SigningKey) -> dict[str, tuple[str, str]]:
    """Each refused token with (a piece of) the reason the client is told."""
    stranger = SigningKey.rsa("rsa-1")  # a key the JWKS does not hold, under a kid it does
    pem_as_secret = rsa_key.public_pem()
    hour_ago = int(time.time()) - 3600
    return {
        "wrong key": (stranger.sign(), "signature is invalid"),
        "expired": (rsa_key.sign(exp=hour_ago), "token expired"),
        "wrong aud": (ec_key.sign(aud="someone-else"), "audience"),
        "no aud": (ec_key.sign(aud=None), "no 'aud' claim"),
        "wrong iss": (rsa_key.sign(iss="https://evil.test"), "issuer"),
        "no iss": (rsa_key.sign(iss=None), "no 'iss' claim"),
        "no exp": (rsa_key.sign(exp=None), "no 'exp' claim"),
        # Algorithm confusion: HS256 "signed" with the public key, as if it were the secret.
        "HS256 with the public key": (
            forge({"alg": "HS256", "typ": "JWT", "kid": "rsa-1"}, good_claims(), pem_as_secret),
            "signature is invalid",
        ),
        "alg none": (
            forge({"alg": "none", "typ": "JWT", "kid": "rsa-1"}, good_claims(), None),
            "algorithm is not allowed",
        ),
        "RS512": (
            jwt.encode(good_claims(), rsa_key.private, "RS512", headers={"kid": "rsa-1"}),
            "algorithm is not allowed",
        ),
        "ES256 under an RSA kid": (ec_key.sign(kid="rsa-1"), "does not match its key"),
    }


async def test_wrong_tokens_are_refused_without_fetching(
    keyed: GatewayServer, jwks: JwksServer, rsa_key: SigningKey, ec_key: SigningKey
) -> None:
    before = jwks.fetches
    for name, (token, why) in refused_tokens(rsa_key, ec_key).items():
        try:
            await refused_everywhere(keyed, token, why)
        except AssertionError as exc:
            raise AssertionError(f"{name}: {exc}") from exc
    assert jwks.fetches == before


async def test_unknown_kids_cost_one_fetch_however_many_arrive(
    rsa_key: SigningKey, ec_key: SigningKey, tmp_path: Path
) -> None:
    hold = threading.Event()
    with (
        JwksServer([rsa_key, ec_key]) as jwks,
        embedded_gateway(tmp_path, jwks_url=jwks.url, jwks_min_refresh_s="3600") as gateway,
    ):
        assert jwks.fetches == 1  # at startup
        jwks.hold = hold  # every fetch now waits: the flood arrives while one runs
        tokens = [rsa_key.sign(kid=f"made-up-{uuid.uuid4().hex}", aud=None) for _ in range(40)]
        http = asyncio.gather(*(asyncio.to_thread(http_outcome, gateway, t) for t in tokens[:30]))
        ws = asyncio.gather(*(ws_outcome(gateway, t, frame=True) for t in tokens[30:]))
        await asyncio.to_thread(wait_until, lambda: jwks.fetches == 2, 20.0, "the refetch")
        hold.set()
        statuses, codes = await http, await ws
        assert [status for status, _ in statuses] == [401] * 30
        assert all("is unknown" in challenge for _, challenge in statuses), statuses
        assert codes == [4401] * 10
        # After that one fetch, more unknown kids are refused at once, without fetching.
        await refused_everywhere(gateway, rsa_key.sign(kid="another-made-up", aud=None), "unknown")
        assert jwks.fetches == 2
        # Known keys still work.
        assert http_outcome(gateway, ec_key.sign(aud=None)) == (200, "")


async def test_key_rotation_is_picked_up(tmp_path: Path) -> None:
    old, new, newer = SigningKey.rsa("2026-01"), SigningKey.ec("2026-02"), SigningKey.rsa("2026-03")
    with (
        JwksServer([old]) as jwks,
        embedded_gateway(tmp_path, jwks_url=jwks.url, jwks_min_refresh_s="1") as gateway,
    ):
        await accepted_everywhere(gateway, old.sign(aud=None))
        jwks.keys = [new]  # the issuer rotates: a new key, the old one withdrawn
        # The first token under the new kid waits for one fetch and is accepted (auth frame:
        # the path through the WebSocket protocol).
        assert await ws_outcome(gateway, new.sign(aud=None), frame=True) == "ready"
        assert jwks.fetches == 2
        await accepted_everywhere(gateway, new.sign(aud=None))
        # The withdrawn key's tokens are refused from then on.
        await refused_everywhere(gateway, old.sign(aud=None), "unknown")
        jwks.keys = [new, newer]
        newer_token = newer.sign(aud=None)
        # Refetches are at most once a second: within one, a new kid is refused; after, taken.
        await asyncio.to_thread(
            wait_until,
            lambda: http_outcome(gateway, newer_token)[0] == 200,
            20.0,
            "the newer key",
        )
        await accepted_everywhere(gateway, newer_token)


async def test_unreachable_jwks_refuses_tokens_until_it_answers(
    rsa_key: SigningKey, tmp_path: Path
) -> None:
    # An unreachable key set does not stop startup (HS256 tokens and health still work).
    with (
        JwksServer([rsa_key], status=503) as jwks,
        embedded_gateway(tmp_path, jwks_url=jwks.url, jwks_min_refresh_s="1") as gateway,
    ):
        log = gateway.log()
        assert "WARNING" in log
        assert f"JWKS {jwks.url} answered HTTP 503" in log
        token = rsa_key.sign(aud=None)
        status, challenge = http_outcome(gateway, token)
        assert status == 401
        assert "could not be fetched" in challenge
        await accepted_everywhere(gateway, jwt.encode(good_claims(), SECRET, "HS256"))
        jwks.status = 200
        await asyncio.to_thread(
            wait_until, lambda: http_outcome(gateway, token)[0] == 200, 20.0, "the key set"
        )
        await accepted_everywhere(gateway, token)


# -- from a PEM file ---------------------------------------------------------------------------


async def test_public_key_file_verifies_its_algorithm_only(
    rsa_key: SigningKey, ec_key: SigningKey, tmp_path: Path
) -> None:
    pem = tmp_path / "public.pem"
    pem.write_bytes(rsa_key.public_pem())
    # secret="" unsets GATEWAY_SECRET: only the RSA key verifies, so only RS256 is accepted.
    with embedded_gateway(tmp_path, secret="", jwt_public_key_file=str(pem)) as gateway:
        await accepted_everywhere(gateway, rsa_key.sign(kid=None, aud=None))
        await accepted_everywhere(gateway, rsa_key.sign(kid="any", aud=None))
        await refused_everywhere(gateway, ec_key.sign(aud=None), "only RS256 is")
        confused = forge({"alg": "HS256"}, good_claims(aud=None), rsa_key.public_pem())
        await refused_everywhere(gateway, confused, "only RS256 is")
        hs256 = jwt.encode(good_claims(aud=None), SECRET, "HS256")
        await refused_everywhere(gateway, hs256, "only RS256 is")


# -- the examples a backend copies -------------------------------------------------------------


async def run_example(command: list[str], env: dict[str, str] | None = None) -> str:
    result = await asyncio.to_thread(run, command, env)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def run(command: list[str], env: dict[str, str] | None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False
    )


@pytest.mark.parametrize("language", ["python", "node"])
async def test_mint_token_examples_make_tokens_the_gateway_accepts(
    language: str,
    keyed: GatewayServer,
    rsa_key: SigningKey,
    ec_key: SigningKey,
    tmp_path: Path,
) -> None:
    if language == "python":
        program = [sys.executable, "examples/mint_token.py"]
    else:
        node = shutil.which("node")
        assert node is not None, "the Node example needs node (>= 20) on PATH"
        program = [node, "examples/mint_token.mjs"]
    claims = ["--sub", OWNER, "--aud", AUDIENCE, "--iss", ISSUER, "--ttl", "120"]
    hs256 = await run_example([*program, *claims], env={"GATEWAY_SECRET": SECRET, "PATH": ""})
    assert jwt.get_unverified_header(hs256)["alg"] == "HS256"
    await accepted_everywhere(keyed, hs256)
    for key in (rsa_key, ec_key):
        path = tmp_path / f"{key.kid}.pem"
        path.write_bytes(key.private_pem())
        signing = ["--key", str(path), "--alg", key.alg, "--kid", key.kid]
        token = await run_example([*program, *claims, *signing])
        assert jwt.get_unverified_header(token) == {"alg": key.alg, "typ": "JWT", "kid": key.kid}
        await accepted_everywhere(keyed, token)
    # Without the secret the example says so, rather than minting something unusable.
    failed = await asyncio.to_thread(run, [*program, *claims], {})
    assert failed.returncode != 0
    assert "GATEWAY_SECRET" in failed.stderr


# -- settings: a bad configuration stops startup, naming the variable --------------------------


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings read the environment: none of the runner's GATEWAY_* variables may leak in."""
    for name in list(os.environ):
        if name.startswith("GATEWAY_") or name == "REDIS_URL":
            monkeypatch.delenv(name)


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"jwt_public_key": "not a pem"}, "GATEWAY_JWT_PUBLIC_KEY is not a PEM public key"),
        ({"jwt_public_key_file": "/nonexistent/key.pem"}, "GATEWAY_JWT_PUBLIC_KEY_FILE"),
        ({"jwks_url": "file:///etc/passwd"}, "GATEWAY_JWKS_URL must be an http"),
        ({"jwks_url": "https://x.test/j", "jwt_public_key": "x"}, "GATEWAY_JWKS_URL or a pub"),
        ({"jwt_algorithms": "HS256,PS256", "secret": SECRET}, "GATEWAY_JWT_ALGORITHMS: PS256"),
        ({"jwt_algorithms": "RS256", "secret": SECRET}, "GATEWAY_JWT_ALGORITHMS lists RS256"),
    ],
)
@pytest.mark.usefixtures("clean_env")
def test_bad_key_settings_name_the_variable(settings: dict[str, str], named: str) -> None:
    with pytest.raises(ValidationError, match=named.replace("(", r"\(")):
        Settings(**settings)  # type: ignore[arg-type]


@pytest.mark.usefixtures("clean_env")
def test_key_files_are_checked_at_startup(rsa_key: SigningKey, tmp_path: Path) -> None:
    private = tmp_path / "private.pem"
    private.write_bytes(rsa_key.private_pem())
    with pytest.raises(ValidationError, match="is a private key"):
        Settings(jwt_public_key_file=private)
    weak = tmp_path / "weak.pem"
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    weak.write_bytes(
        small.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    with pytest.raises(ValidationError, match="1024 bits"):
        Settings(jwt_public_key_file=weak)
    p384 = ec.generate_private_key(ec.SECP384R1()).public_key()
    pem = p384.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    with pytest.raises(ValidationError, match="P-256"):
        Settings(jwt_public_key=pem.decode())


@pytest.mark.usefixtures("clean_env")
def test_no_key_at_all_is_refused_when_the_gateway_starts() -> None:
    with pytest.raises(BadRequest, match=r"GATEWAY_SECRET.*GATEWAY_JWKS_URL"):
        Settings().token_verifier()


@pytest.mark.usefixtures("clean_env")
def test_inline_public_key_and_audience_list(ec_key: SigningKey) -> None:
    settings = Settings(jwt_public_key=ec_key.public_pem().decode(), jwt_audience="a, progress")
    verifier = settings.token_verifier()
    assert verifier.algorithms == {"ES256"}
    assert verifier.verify(ec_key.sign(kid=None)).sub == OWNER
    with pytest.raises(Unauthorized, match="audience"):
        verifier.verify(ec_key.sign(aud="b"))


# -- the key set's bounds, without a gateway ---------------------------------------------------


async def test_a_kid_less_token_needs_a_single_key_set(rsa_key: SigningKey) -> None:
    other = SigningKey.rsa("rsa-2")
    with JwksServer([rsa_key]) as jwks:
        verifier = TokenVerifier(AuthConfig(jwks_url=jwks.url))
        await verifier.start()
        try:
            assert (await verifier.authenticate(rsa_key.sign(kid=None, aud=None))).sub == OWNER
            jwks.keys = [rsa_key, other]
            assert verifier.jwks is not None
            await verifier.jwks.refresh()
            with pytest.raises(Unauthorized, match="no 'kid' header and the key set holds 2"):
                await verifier.authenticate(rsa_key.sign(kid=None, aud=None))
        finally:
            await verifier.aclose()


async def test_an_oversized_key_set_is_refused_and_the_loaded_keys_stay(
    rsa_key: SigningKey,
) -> None:
    with JwksServer([rsa_key]) as jwks:
        cache = JwksCache(jwks.url, frozenset({"RS256"}), JwksOptions(max_bytes=4096))
        await cache.refresh()
        assert list(cache.keys) == ["rsa-1"]
        jwks.body = json.dumps({"keys": [], "padding": "x" * 10_000}).encode()
        await cache.refresh()
        assert cache.last_error is not None
        assert "more than the limit of 4096" in cache.last_error
        assert list(cache.keys) == ["rsa-1"]


async def test_a_key_set_that_does_not_answer_in_time_is_given_up(rsa_key: SigningKey) -> None:
    with JwksServer([rsa_key], hold=threading.Event()) as jwks:
        cache = JwksCache(jwks.url, frozenset({"RS256"}), JwksOptions(timeout_s=0.5))
        await cache.refresh()
        assert cache.last_error is not None
        assert "timed out" in cache.last_error or "longer than" in cache.last_error
        assert cache.keys == {}


async def test_keys_that_cannot_verify_are_skipped(rsa_key: SigningKey) -> None:
    symmetric = {"kty": "oct", "kid": "hmac", "k": b64url(b"k" * 32)}
    encryption = {**rsa_key.jwk(), "kid": "enc", "use": "enc"}
    mislabelled = {**rsa_key.jwk(), "kid": "lie", "alg": "ES256"}
    document = {"keys": [symmetric, encryption, mislabelled, rsa_key.jwk(), "junk"]}
    with JwksServer([], body=json.dumps(document).encode()) as jwks:
        cache = JwksCache(jwks.url, frozenset({"RS256", "ES256"}), JwksOptions())
        await cache.refresh()
        assert list(cache.keys) == ["rsa-1"]
