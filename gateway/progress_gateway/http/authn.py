"""Who is calling: the owner named by the request's token, and nothing else (docs/design.md §10).

A token comes from ``Authorization: Bearer <jwt>`` or, where a browser API cannot set headers
(``EventSource``), from ``?token=``; the header wins when both are present. The owner is only ever
the token's ``sub``: no request parameter can name another one. Every failure is ``Unauthorized``
(401); the challenge for ``WWW-Authenticate`` (RFC 6750 §3) is left on ``request.state`` so the
problem handler can say whether the token was missing or rejected.
"""

from __future__ import annotations

import re

from starlette.requests import Request

from progress_core.errors import Unauthorized
from progress_gateway.gateway import Gateway

__all__ = ["REALM", "authenticate", "challenge"]

REALM = "progress-gateway"
# RFC 6750 §3: error_description is limited to printable ASCII without '"' and '\'.
_UNSAFE_DESCRIPTION = re.compile(r"[^\x20-\x21\x23-\x5b\x5d-\x7e]")


async def authenticate(request: Request) -> str:
    """Verify the request's token and return its owner; also kept on ``request.state.owner``.

    Awaits only when the token names a signing key not loaded yet (one JWKS fetch, shared and
    rate-limited); otherwise no I/O.
    """
    token = _token(request)
    if token is None:
        raise Unauthorized("missing token: send 'Authorization: Bearer <token>' or ?token=")
    gateway: Gateway = request.state.gateway
    try:
        claims = await gateway.verifier.authenticate(token)
    except Unauthorized as exc:
        request.state.auth_challenge = challenge(exc.message)
        raise
    request.state.owner = claims.sub
    return claims.sub


def challenge(rejection: str | None = None) -> str:
    """The ``WWW-Authenticate`` value: bare when no token was sent, ``invalid_token`` otherwise."""
    if rejection is None:
        return f'Bearer realm="{REALM}"'
    description = _UNSAFE_DESCRIPTION.sub("_", rejection)[:200]
    return f'Bearer realm="{REALM}", error="invalid_token", error_description="{description}"'


def _token(request: Request) -> str | None:
    authorization = request.headers.get("authorization")
    if authorization is not None:
        scheme, _, credentials = authorization.partition(" ")
        if scheme.lower() != "bearer" or not credentials.strip():
            # A header that is present but unusable is refused, never silently skipped.
            request.state.auth_challenge = challenge("Authorization must be 'Bearer <token>'")
            raise Unauthorized("the Authorization header must be 'Bearer <token>'")
        return credentials.strip()
    token = request.query_params.get("token")
    return token or None
