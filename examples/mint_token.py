"""Mint a token the progress gateway accepts, as an application's backend would (docs/auth.md).

Only PyJWT is needed (``pip install 'PyJWT[crypto]'`` for RS256/ES256). The gateway reads the
owner from ``sub`` and requires ``exp``; ``aud`` and ``iss`` only matter when the gateway is
configured to check them (GATEWAY_JWT_AUDIENCE, GATEWAY_JWT_ISSUER).

    # HS256 with the secret the gateway has as GATEWAY_SECRET:
    GATEWAY_SECRET=... python examples/mint_token.py --sub alice
    # RS256 / ES256 with a private key whose public half the gateway knows (a PEM file or
    # GATEWAY_JWKS_URL, where --kid names the key):
    python examples/mint_token.py --sub alice --key private.pem --alg RS256 --kid key-2026-01
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import jwt


def mint(
    sub: str,
    *,
    ttl_s: int = 600,
    secret: str | None = None,
    private_key_pem: bytes | None = None,
    alg: str = "HS256",
    kid: str | None = None,
    audience: str | None = None,
    issuer: str | None = None,
) -> str:
    """A token for owner ``sub``, valid for ``ttl_s`` seconds: short-lived, since the gateway
    has no revocation list (the client asks the backend for a new one when it expires)."""
    now = int(time.time())
    claims: dict[str, object] = {"sub": sub, "iat": now, "exp": now + ttl_s}
    if audience is not None:
        claims["aud"] = audience
    if issuer is not None:
        claims["iss"] = issuer
    headers = {"kid": kid} if kid is not None else None
    if alg == "HS256":
        if secret is None:
            raise ValueError("HS256 needs the shared secret (GATEWAY_SECRET)")
        return jwt.encode(claims, secret, algorithm=alg, headers=headers)
    if private_key_pem is None:
        raise ValueError(f"{alg} needs a private key (--key)")
    return jwt.encode(claims, private_key_pem, algorithm=alg, headers=headers)


def main() -> None:
    parser = argparse.ArgumentParser(description="Mint a token the progress gateway accepts.")
    parser.add_argument("--sub", required=True, help="the owner: who may watch the jobs")
    parser.add_argument("--ttl", type=int, default=600, help="seconds until it expires")
    parser.add_argument("--alg", choices=["HS256", "RS256", "ES256"], default="HS256")
    parser.add_argument("--key", type=Path, help="private key PEM file (RS256/ES256)")
    parser.add_argument("--kid", help="key id, as the gateway's JWKS names the key")
    parser.add_argument("--aud", help="audience, when the gateway checks one")
    parser.add_argument("--iss", help="issuer, when the gateway checks one")
    args = parser.parse_args()
    try:
        token = mint(
            args.sub,
            ttl_s=args.ttl,
            secret=os.environ.get("GATEWAY_SECRET"),
            private_key_pem=args.key.read_bytes() if args.key else None,
            alg=args.alg,
            kid=args.kid,
            audience=args.aud,
            issuer=args.iss,
        )
    except ValueError as exc:
        sys.exit(f"mint_token: {exc}")
    print(token)


if __name__ == "__main__":
    main()
