"""Gateway configuration from ``GATEWAY_*`` environment variables.

``Settings`` is built by the entry point (``cli.py``) and passed down; nothing imports a shared
instance and nothing reads the environment at import time. Values are checked when the object is
built, so a bad deployment fails at startup with the variable's name, not on the first request.
"""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from redis.asyncio.connection import parse_url

from progress_core.config import (
    DEFAULT_SQLITE_PATH,
    check_key_prefix,
    check_redis_url,
    sqlite_url,
)
from progress_core.errors import BadRequest
from progress_core.store import StoreOptions
from progress_core.store.base import DEFAULT_HISTORY_MAXLEN, DEFAULT_RETENTION_S
from progress_gateway.auth import ALGORITHMS, AuthConfig, TokenVerifier, check_secret
from progress_gateway.broker.subscriber import tls_context
from progress_gateway.jwks import JwksOptions, check_jwks_url, load_pem_key

__all__ = ["Settings"]


class Settings(BaseSettings):
    """Everything the gateway process needs to start; CLI flags override the environment."""

    model_config = SettingsConfigDict(
        env_prefix="GATEWAY_",
        # An empty variable counts as unset, so GATEWAY_REDIS_URL="" falls back to REDIS_URL.
        env_ignore_empty=True,
        extra="ignore",
        # Errors must not echo a secret or a password-bearing URL back into logs.
        hide_input_in_errors=True,
        validate_by_name=True,
        validate_by_alias=True,
    )

    redis_url: str | None = Field(
        # repr=False: the URL may carry a password.
        default=None,
        validation_alias=AliasChoices("GATEWAY_REDIS_URL", "REDIS_URL"),
        repr=False,
    )
    sqlite_path: Path = DEFAULT_SQLITE_PATH
    # Tokens (docs/auth.md): HS256 with ``secret``; RS256/ES256 with one public key (PEM, inline
    # or from a file) or the keys of a JWKS URL. ``jwt_algorithms`` narrows what is accepted
    # (default: every algorithm a configured key verifies); ``aud``/``iss`` are checked when set.
    secret: SecretStr | None = None
    jwt_public_key: str | None = None
    jwt_public_key_file: Path | None = None
    jwks_url: str | None = None
    jwt_algorithms: Annotated[list[str], NoDecode] = Field(default_factory=list)
    jwt_audience: Annotated[list[str], NoDecode] = Field(default_factory=list)
    jwt_issuer: str | None = None
    jwks_timeout_s: float = Field(default=5.0, gt=0, le=60)
    jwks_max_bytes: int = Field(default=512 * 1024, ge=1024, le=16 * 1024 * 1024)
    # A token with an unknown ``kid`` makes the gateway refetch the JWKS at most this often;
    # the set is also refetched in the background every ``jwks_max_age_s``.
    jwks_min_refresh_s: float = Field(default=30.0, ge=1, le=3600)
    jwks_max_age_s: float = Field(default=300.0, ge=10, le=86400)
    key_prefix: str = "pgw"
    retention_s: int = Field(default=DEFAULT_RETENTION_S, ge=60)
    history_maxlen: int = Field(default=DEFAULT_HISTORY_MAXLEN, ge=1)
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    # Cross-origin browsers allowed for CORS and the WebSocket Origin check; "*" allows any.
    allowed_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # Bound on repairing a detected loss (retries, reconnect resync); every watched job is also
    # re-read once per ``sweep_s`` as a safety net (idle jobs cost nothing in between).
    resync_s: float = Field(default=5.0, gt=0, le=3600)
    sweep_s: float = Field(default=60.0, gt=0, le=86400)
    probe_s: float = Field(default=1.0, gt=0, le=3600)
    drain_s: float = Field(default=10.0, ge=0, le=600)
    auth_timeout_s: float = Field(default=10.0, gt=0, le=300)
    # Clients ping every ``ws_heartbeat_s`` (told in ``ready``); dead peers are found by TCP
    # keepalive after as long. Server WebSocket pings, to a peer silent for ``ws_ping_s``, only
    # keep idle connections open through proxies: 0 (default) sends none.
    ws_heartbeat_s: float = Field(default=20.0, gt=0, le=3600)
    ws_ping_s: float = Field(default=0.0, ge=0, le=3600)
    # "lean": our subclass of uvicorn's protocol (progress_gateway.wsproto), lighter per idle
    # connection; "uvicorn": uvicorn's own sans-I/O protocol, which pings every ws_heartbeat_s.
    ws_impl: Literal["lean", "uvicorn"] = "lean"
    max_frame_bytes: int = Field(default=64 * 1024, ge=1024, le=16 * 1024 * 1024)
    max_subscriptions: int = Field(default=1000, ge=1, le=100_000)
    max_connections_per_owner: int = Field(default=50, ge=1, le=100_000)
    # A WebSocket client that does not read is closed with 1008 once frames have waited this
    # long with nothing accepted by its socket, or once this many bytes of frames wait for it.
    send_stall_s: float = Field(default=10.0, gt=0, le=3600)
    max_pending_bytes: int = Field(default=4 * 1024 * 1024, ge=16 * 1024, le=1024**3)
    max_body_bytes: int = Field(default=256 * 1024, ge=1024, le=64 * 1024 * 1024)
    # Slow clients (slowloris): the request line and headers, then the body, must arrive within
    # these, or the connection is closed (408).
    header_timeout_s: float = Field(default=10.0, gt=0, le=600)
    body_timeout_s: float = Field(default=30.0, gt=0, le=3600)
    max_wait_s: float = Field(default=30.0, gt=0, le=300)
    sse_keepalive_s: float = Field(default=15.0, gt=0, le=300)
    recent_s: float = Field(default=86400.0, ge=0)
    # Executors and the reaper (docs/design.md §7).
    worker_heartbeat_s: float = Field(default=10.0, gt=0, le=3600)
    stale_after_s: float = Field(default=60.0, gt=0)
    # A job without an executor (created by an app's own worker through the SDK) whose heartbeat
    # is this old ends failed/worker_lost: nothing else can tell whether its worker is alive.
    orphan_after_s: float = Field(default=300.0, gt=0)
    reap_interval_s: float = Field(default=10.0, gt=0, le=3600)
    local_concurrency: int = Field(default=4, ge=1, le=1024)
    local_slots_dir: Path | None = None
    cancel_grace_s: float = Field(default=5.0, ge=0, le=600)
    modal_app: str | None = None
    modal_environment: str | None = None
    # Every Modal RPC (and the startup lookup) is bounded by this; past it Modal counts as
    # unavailable: at startup the gateway runs degraded and retries in the background.
    modal_timeout_s: float = Field(default=30.0, gt=0, le=600)
    # Runs of one job at most: Modal re-runs an input whose container died, each a new attempt.
    modal_max_attempts: int = Field(default=3, ge=1, le=100)
    # The deployed functions' timeout (modal_app.FUNCTION_TIMEOUT_S) plus a margin: a call Modal
    # still reports running while its worker has been silent longer is finalized worker_lost.
    modal_function_timeout_s: float = Field(default=3600.0, gt=0, le=86400)
    modal_timeout_margin_s: float = Field(default=300.0, ge=0, le=86400)
    # Serve the demo page at / (set by `progress-gateway demo`).
    demo_page: bool = False

    @model_validator(mode="after")
    def _check_orphan_after(self) -> Settings:
        # The reaper and lazy finalization only look at stale jobs; a shorter orphan time would
        # silently mean the stale one.
        if self.orphan_after_s < self.stale_after_s:
            raise ValueError(
                f"GATEWAY_ORPHAN_AFTER_S ({self.orphan_after_s:g}) must be at least "
                f"GATEWAY_STALE_AFTER_S ({self.stale_after_s:g})"
            )
        return self

    @field_validator("redis_url")
    @classmethod
    def _check_redis_url(cls, value: str | None) -> str | None:
        if value is None:
            return value
        if urlsplit(check_redis_url(value)).scheme == "rediss":
            # TLS options are used only when a connection opens: build the subscriber's context
            # now, so a bad one stops startup instead of leaving the gateway without a subscriber.
            try:
                tls_context(parse_url(value))
            except (ValueError, OSError) as exc:  # ssl.SSLError is an OSError
                raise ValueError(f"TLS options: {exc}") from None
        return value

    @field_validator("allowed_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        # GATEWAY_ALLOWED_ORIGINS="https://app.example,https://admin.example"
        if isinstance(value, str):
            return [origin.strip() for origin in value.split(",") if origin.strip()]
        return value

    @field_validator("secret")
    @classmethod
    def _check_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            try:
                check_secret(value.get_secret_value())
            except BadRequest as exc:
                raise ValueError(exc.message) from exc
        return value

    @field_validator("jwt_algorithms", "jwt_audience", mode="before")
    @classmethod
    def _split_list(cls, value: object) -> object:
        # GATEWAY_JWT_ALGORITHMS="RS256,ES256", GATEWAY_JWT_AUDIENCE="api,https://app.example"
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @field_validator("jwt_algorithms")
    @classmethod
    def _check_algorithms(cls, value: list[str]) -> list[str]:
        if unknown := [alg for alg in value if alg not in ALGORITHMS]:
            raise ValueError(
                f"GATEWAY_JWT_ALGORITHMS: {', '.join(unknown)} not supported; "
                f"choose from {', '.join(ALGORITHMS)}"
            )
        return value

    @field_validator("jwks_url")
    @classmethod
    def _check_jwks_url(cls, value: str | None) -> str | None:
        if value is None:
            return value
        try:
            return check_jwks_url(value)
        except ValueError as exc:
            raise ValueError(f"GATEWAY_JWKS_URL {exc}") from None

    @model_validator(mode="after")
    def _check_token_keys(self) -> Settings:
        # Builds the verifier once, so a missing file, a bad PEM or an algorithm without a key
        # stops startup with the variable's name.
        if self.jwt_public_key is not None and self.jwt_public_key_file is not None:
            raise ValueError("set GATEWAY_JWT_PUBLIC_KEY or GATEWAY_JWT_PUBLIC_KEY_FILE, not both")
        if self.jwks_url is not None and self._has_public_key():
            raise ValueError(
                "set GATEWAY_JWKS_URL or a public key (GATEWAY_JWT_PUBLIC_KEY[_FILE]), not both"
            )
        if self.secret is not None or self._has_public_key() or self.jwks_url is not None:
            self.auth_config()
        return self

    def _has_public_key(self) -> bool:
        return self.jwt_public_key is not None or self.jwt_public_key_file is not None

    def auth_config(self) -> AuthConfig:
        """What ``TokenVerifier`` needs; raises ``ValueError`` naming the variable at fault."""
        public_key = None
        if self.jwt_public_key is not None:
            try:
                public_key = load_pem_key(self.jwt_public_key.encode())
            except ValueError as exc:
                raise ValueError(f"GATEWAY_JWT_PUBLIC_KEY {exc}") from None
        elif self.jwt_public_key_file is not None:
            name = "GATEWAY_JWT_PUBLIC_KEY_FILE"
            try:
                pem = self.jwt_public_key_file.expanduser().read_bytes()
            except OSError as exc:
                raise ValueError(f"{name}: cannot read {self.jwt_public_key_file}: {exc}") from None
            try:
                public_key = load_pem_key(pem)
            except ValueError as exc:
                raise ValueError(f"{name} ({self.jwt_public_key_file}) {exc}") from None
        config = AuthConfig(
            secret=None if self.secret is None else self.secret.get_secret_value(),
            public_key=public_key,
            jwks_url=self.jwks_url,
            algorithms=frozenset(self.jwt_algorithms),
            audience=tuple(self.jwt_audience),
            issuer=self.jwt_issuer,
            jwks=JwksOptions(
                timeout_s=self.jwks_timeout_s,
                min_refresh_s=self.jwks_min_refresh_s,
                max_age_s=self.jwks_max_age_s,
                max_bytes=self.jwks_max_bytes,
            ),
        )
        usable: set[str] = set()
        if config.secret is not None:
            usable.add("HS256")
        if public_key is not None:
            usable.add(public_key[0])
        if self.jwks_url is not None:
            usable |= {"RS256", "ES256"}
        if missing := set(self.jwt_algorithms) - usable:
            raise ValueError(
                f"GATEWAY_JWT_ALGORITHMS lists {', '.join(sorted(missing))} but no configured key "
                "verifies it (HS256: GATEWAY_SECRET; RS256/ES256: GATEWAY_JWT_PUBLIC_KEY[_FILE] "
                "of that type or GATEWAY_JWKS_URL)"
            )
        return config

    def token_verifier(self) -> TokenVerifier:
        """The verifier of this configuration; ``BadRequest`` when no key is configured."""
        if self.secret is None and not self._has_public_key() and self.jwks_url is None:
            raise BadRequest(
                "no key to verify tokens with: set GATEWAY_SECRET (HS256), "
                "GATEWAY_JWT_PUBLIC_KEY[_FILE] or GATEWAY_JWKS_URL (RS256/ES256)"
            )
        try:
            return TokenVerifier(self.auth_config())
        except ValueError as exc:
            raise BadRequest(str(exc)) from None

    @field_validator("key_prefix")
    @classmethod
    def _check_key_prefix(cls, value: str) -> str:
        return check_key_prefix(value)

    def store_url(self) -> str:
        """The Redis URL when one is configured, else the embedded SQLite file (absolute)."""
        if self.redis_url is not None:
            return self.redis_url
        return sqlite_url(self.sqlite_path)

    def slots_dir(self) -> Path:
        """Where local job processes take their concurrency slots: shared by every gateway
        process of one store on this host, so the bound holds across them and restarts."""
        if self.local_slots_dir is not None:
            return self.local_slots_dir
        digest = hashlib.sha256(f"{self.store_url()}|{self.key_prefix}".encode()).hexdigest()
        return Path(tempfile.gettempdir()) / f"progress-gateway-slots-{digest[:16]}"

    def store_options(self) -> StoreOptions:
        return StoreOptions(
            prefix=self.key_prefix,
            retention_s=self.retention_s,
            history_maxlen=self.history_maxlen,
        )
