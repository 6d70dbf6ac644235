"""Public signing keys: from a PEM, or from a JSON Web Key Set fetched over HTTP(S).

A token's key is looked up by its ``kid`` on every verification, so the lookup is a dict read and
never waits on the network. The key set is fetched when the gateway starts, again in the
background every ``max_age_s`` (so a key the issuer removed stops being accepted), and when a
token names a ``kid`` the set does not hold — at most once per ``min_refresh_s``: tokens with
made-up key ids cost one fetch per interval, not one per token, and every token that arrives
while a fetch runs waits for that one fetch. Fetches run in a worker thread, bounded in time
(``timeout_s``) and size (``max_bytes``). A failed fetch keeps the keys already loaded and is
logged at warning level; it never makes a token acceptable.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from http.client import HTTPException
from typing import Any
from urllib.parse import urlsplit

from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from jwt.exceptions import InvalidKeyError

__all__ = [
    "ASYMMETRIC_ALGORITHMS",
    "MIN_RSA_BITS",
    "JwksCache",
    "JwksError",
    "JwksOptions",
    "PublicKey",
    "check_jwks_url",
    "load_pem_key",
]

logger = logging.getLogger("gateway.auth")

PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey
# The algorithm each key type verifies; a key is never used with any other.
ASYMMETRIC_ALGORITHMS = frozenset({"RS256", "ES256"})
MIN_RSA_BITS = 2048


class JwksError(Exception):
    """The key set could not be fetched or read; the message says why, for the log."""


@dataclass(frozen=True, slots=True)
class JwksOptions:
    timeout_s: float = 5.0
    min_refresh_s: float = 30.0
    max_age_s: float = 300.0
    max_bytes: int = 512 * 1024


def check_jwks_url(url: str) -> str:
    """Only ``http(s)://host/...``: the gateway fetches it, so no file:// or other schemes."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"must be an http:// or https:// URL with a host, got {url!r}")
    return url


def load_pem_key(pem: bytes) -> tuple[str, PublicKey]:
    """The algorithm and key of a PEM public key: RSA (RS256, >= 2048 bits) or P-256 (ES256).

    Raises:
        ValueError: not a PEM public key, or a type or size the gateway does not verify with.
    """
    if b"PRIVATE KEY" in pem:
        raise ValueError("is a private key: configure the public key only")
    try:
        key = load_pem_public_key(pem)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"is not a PEM public key: {exc}") from None
    return _algorithm_of(key), key  # type: ignore[return-value]


def _algorithm_of(key: object) -> str:
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            raise ValueError(f"RSA key has {key.key_size} bits, at least {MIN_RSA_BITS} needed")
        return "RS256"
    if isinstance(key, ec.EllipticCurvePublicKey):
        if not isinstance(key.curve, ec.SECP256R1):
            raise ValueError(f"EC key is on {key.curve.name}; ES256 needs P-256 (secp256r1)")
        return "ES256"
    raise ValueError(f"{type(key).__name__} is not supported: use an RSA or a P-256 EC key")


def parse_jwks(document: bytes, algorithms: frozenset[str]) -> dict[str, tuple[str, PublicKey]]:
    """The usable signing keys of a JWKS document by ``kid``: public RSA and P-256 keys whose
    algorithm is allowed. Keys without a ``kid``, for encryption, or of other types are skipped.

    Raises:
        JwksError: the document is not a JSON object with a ``keys`` list.
    """
    try:
        data = json.loads(document)
    except ValueError as exc:
        raise JwksError(f"is not JSON: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
        raise JwksError('is not a JSON Web Key Set (an object with a "keys" list)')
    keys: dict[str, tuple[str, PublicKey]] = {}
    skipped: list[str] = []
    for entry in data["keys"]:
        try:
            kid, alg, key = _parse_jwk(entry)
        except ValueError as exc:
            skipped.append(str(exc))
            continue
        if alg in algorithms:
            keys[kid] = (alg, key)
        else:
            skipped.append(f"key {kid!r}: {alg} is not an allowed algorithm")
    if skipped:
        logger.info("JWKS: skipped %d keys: %s", len(skipped), "; ".join(skipped[:5]))
    return keys


def _parse_jwk(entry: object) -> tuple[str, str, PublicKey]:
    if not isinstance(entry, dict):
        raise ValueError("an entry is not an object")
    kid = entry.get("kid")
    if not isinstance(kid, str) or not kid:
        raise ValueError("a key has no 'kid'")
    if entry.get("use", "sig") != "sig":
        raise ValueError(f"key {kid!r} is not for signatures")
    kty = entry.get("kty")
    try:
        if kty == "RSA":
            key: object = RSAAlgorithm.from_jwk(entry)
        elif kty == "EC":
            key = ECAlgorithm.from_jwk(entry)
        else:
            raise ValueError(f"key {kid!r}: key type {kty!r} is not supported")
    except InvalidKeyError as exc:
        raise ValueError(f"key {kid!r}: {exc}") from None
    if isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        key = key.public_key()  # a set that leaks private parts still only verifies
    alg = _algorithm_of(key)
    declared = entry.get("alg")
    if declared is not None and declared != alg:
        raise ValueError(f"key {kid!r}: 'alg' {declared!r} does not fit a {kty} key")
    return kid, alg, key  # type: ignore[return-value]


class _NoOtherSchemes(urllib.request.HTTPRedirectHandler):
    """Follow redirects only to http(s) URLs."""

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: Any,
        code: int,
        msg: str,
        headers: Any,
        newurl: str,
    ) -> urllib.request.Request | None:
        if urlsplit(newurl).scheme not in ("http", "https"):
            raise JwksError(f"redirected to a non-HTTP URL {newurl!r}")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


_OPENER = urllib.request.build_opener(_NoOtherSchemes)


def _download(url: str, timeout_s: float, max_bytes: int) -> bytes:
    """GET ``url`` (in a worker thread): at most ``max_bytes``, within ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    request = urllib.request.Request(
        url, headers={"Accept": "application/json", "User-Agent": "progress-gateway"}
    )
    try:
        with _OPENER.open(request, timeout=timeout_s) as response:
            length = response.headers.get("Content-Length")
            if length is not None and length.isdigit() and int(length) > max_bytes:
                raise JwksError(f"is {length} bytes, more than the limit of {max_bytes}")
            body = bytearray()
            while chunk := response.read(min(64 * 1024, max_bytes + 1 - len(body))):
                body += chunk
                if len(body) > max_bytes:
                    raise JwksError(f"is larger than the limit of {max_bytes} bytes")
                if time.monotonic() > deadline:
                    raise JwksError(f"took longer than {timeout_s:g} s")
            return bytes(body)
    except urllib.error.HTTPError as exc:
        raise JwksError(f"answered HTTP {exc.code}") from None
    except urllib.error.URLError as exc:
        raise JwksError(f"is unreachable: {exc.reason}") from None
    except (TimeoutError, OSError, HTTPException) as exc:
        raise JwksError(f"failed: {type(exc).__name__}: {exc}") from None


class JwksCache:
    """The keys of one JWKS URL, by ``kid``; see the module docstring for when it refetches."""

    def __init__(self, url: str, algorithms: frozenset[str], options: JwksOptions) -> None:
        self.url = url
        self.algorithms = algorithms & ASYMMETRIC_ALGORITHMS
        self.options = options
        self.keys: Mapping[str, tuple[str, PublicKey]] = {}
        self.fetches = 0
        self.last_error: str | None = None
        self._refresh_after = 0.0  # monotonic: no unknown-kid fetch before this
        self._fetching: asyncio.Task[None] | None = None
        self._kid_fetch: asyncio.Task[None] | None = None  # the fetch unknown kids wait for
        self._refresher: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Fetch once, then keep refreshing in the background. An unreachable set does not
        stop startup: its failure is logged, tokens it would verify are refused until a later
        fetch (every ``min_refresh_s`` while failing) succeeds."""
        await self.refresh()
        if self._refresher is None:
            self._refresher = asyncio.create_task(self._refresh_forever(), name="jwks-refresh")

    async def aclose(self) -> None:
        for task in (self._refresher, self._fetching):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        self._refresher = self._fetching = self._kid_fetch = None

    def may_refresh(self) -> bool:
        """Whether a token with an unknown ``kid`` may wait for a fetch: the one unknown kids
        already wait for, or a new one if the last was at least ``min_refresh_s`` ago."""
        waited_for = self._kid_fetch
        if waited_for is not None and not waited_for.done():
            return True
        return time.monotonic() >= self._refresh_after

    async def refresh_for_unknown_kid(self) -> None:
        """Wait for a fetch (joining one that runs) if ``may_refresh()``; then none for
        ``min_refresh_s``, so verifying the same token again after this refuses it."""
        if not self.may_refresh():
            return
        self._refresh_after = time.monotonic() + self.options.min_refresh_s
        if self._kid_fetch is None or self._kid_fetch.done():
            self._kid_fetch = self._start_fetch()
        try:
            await asyncio.shield(self._kid_fetch)
        finally:
            self._refresh_after = time.monotonic() + self.options.min_refresh_s

    async def refresh(self) -> None:
        """Fetch the set now, or wait for the fetch that runs. Never raises for a failed fetch:
        it is logged and the keys already loaded stay."""
        # Shielded: a caller that gives up (its client left) does not cancel the others' fetch.
        await asyncio.shield(self._start_fetch())

    def _start_fetch(self) -> asyncio.Task[None]:
        """The fetch that runs, or a new one."""
        if self._fetching is None:
            self._fetching = asyncio.create_task(self._fetch(), name="jwks-fetch")
            self._fetching.add_done_callback(self._fetched)
        return self._fetching

    def _fetched(self, task: asyncio.Task[None]) -> None:
        if self._fetching is task:
            self._fetching = None

    async def _fetch(self) -> None:
        self.fetches += 1
        options = self.options
        try:
            async with asyncio.timeout(options.timeout_s + 1.0):
                document = await asyncio.to_thread(
                    _download, self.url, options.timeout_s, options.max_bytes
                )
            keys = parse_jwks(document, self.algorithms)
        except TimeoutError:
            self._failed(f"took longer than {options.timeout_s:g} s")
            return
        except JwksError as exc:
            self._failed(str(exc))
            return
        if not keys:
            logger.warning("JWKS %s holds no usable signing key: every token is refused", self.url)
        self.keys = keys
        self.last_error = None
        logger.info("JWKS %s: %d signing keys: %s", self.url, len(keys), sorted(keys))

    def _failed(self, why: str) -> None:
        self.last_error = why
        logger.warning(
            "JWKS %s %s; keeping the %d keys loaded before, tokens signed with any other are "
            "refused",
            self.url,
            why,
            len(self.keys),
        )

    async def _refresh_forever(self) -> None:
        while True:
            failing = self.last_error is not None
            wait_s = self.options.min_refresh_s if failing else self.options.max_age_s
            await asyncio.sleep(min(wait_s, self.options.max_age_s))
            await self.refresh()
