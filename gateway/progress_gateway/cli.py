"""The ``progress-gateway`` command.

Each subcommand is one ``add_<name>`` function in ``COMMANDS`` that registers its parser and a
handler ``(args) -> exit code``; ``serve`` and ``demo`` plug in the same way. Handlers build
``Settings`` themselves (flags override the environment) and pass them down. Expected failures
(bad input, bad configuration) print one line per problem to stderr and exit 2; other
``GatewayError`` failures exit 1. Never a traceback for either.
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import secrets
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeAlias

from pydantic import ValidationError

from progress_core.errors import BadRequest, GatewayError
from progress_gateway.auth import check_secret, issue_token
from progress_gateway.settings import Settings

__all__ = ["COMMANDS", "main"]

PROG = "progress-gateway"
EXIT_FAILURE = 1
EXIT_USAGE = 2

Handler: TypeAlias = Callable[[argparse.Namespace], int]
Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def add_token(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "token",
        help="mint a development JWT for an owner",
        description="Print one HS256 token for --sub on stdout.",
    )
    parser.add_argument("--sub", required=True, help="the owner the token acts for")
    parser.add_argument("--ttl", type=int, default=3600, help="seconds until expiry (3600)")
    parser.add_argument(
        "--secret",
        help="signing secret, at least 32 bytes (default: $GATEWAY_SECRET; prefer the variable, "
        "arguments are visible to other users of the machine)",
    )
    parser.set_defaults(handler=run_token)


def run_token(args: argparse.Namespace) -> int:
    secret: str | None = args.secret
    if secret is None:
        configured = Settings().secret
        if configured is None:
            raise BadRequest("no signing secret: set GATEWAY_SECRET or pass --secret")
        secret = configured.get_secret_value()
    print(issue_token(secret, args.sub, args.ttl))
    return 0


def add_serve(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="run the gateway (WebSocket, SSE, HTTP API)",
        description="Serve the gateway. Settings come from GATEWAY_* variables; flags override "
        "them. Without a Redis URL the embedded SQLite store is used.",
    )
    parser.add_argument("--host", help="bind address (GATEWAY_HOST, 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (GATEWAY_PORT, 8000)")
    parser.add_argument("--redis-url", help="Redis URL (GATEWAY_REDIS_URL or REDIS_URL)")
    parser.add_argument("--sqlite-path", help="embedded store file (GATEWAY_SQLITE_PATH)")
    parser.add_argument("--drain-s", type=float, help="seconds to spread 1001 closes over (10)")
    parser.add_argument("--resync-s", type=float, help="loss repair bound, s (5)")
    parser.add_argument(
        "--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"]
    )
    parser.set_defaults(handler=run_serve)


def run_serve(args: argparse.Namespace) -> int:
    from progress_gateway.server import serve

    overrides = {
        "host": args.host,
        "port": args.port,
        "redis_url": args.redis_url,
        "sqlite_path": args.sqlite_path,
        "drain_s": args.drain_s,
        "resync_s": args.resync_s,
    }
    settings = Settings(**{name: value for name, value in overrides.items() if value is not None})
    check_port_free(settings.host, settings.port)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    serve(settings, args.log_level)
    return 0


def check_port_free(host: str, port: int) -> None:
    """Fail with a hint before anything starts when ``host:port`` cannot be bound.

    uvicorn binds only after the app's startup, then logs the error among its own lines and
    exits 3; a newcomer running ``demo`` twice deserves one line saying what to do. (Another
    process may still take the port between this check and uvicorn's bind.)
    """
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise BadRequest(f"cannot listen on {host!r}: {exc.strerror}") from exc
    for family, kind, protocol, _, address in addresses:
        with socket.socket(family, kind, protocol) as probe:
            # As uvicorn does: a port left in TIME_WAIT by a stopped gateway is free.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise BadRequest(
                        f"port {port} on {host} is already in use (another gateway or demo?): "
                        "stop it, or choose another port with --port or GATEWAY_PORT"
                    ) from exc
                raise BadRequest(f"cannot listen on {host}:{port}: {exc.strerror}") from exc


def add_demo(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run the gateway with the local executor and demo jobs, ready to try",
        description="One command on a fresh machine: the gateway on the embedded SQLite store "
        "(unless --redis-url), local job processes, the demo job kinds and a printed dev token.",
    )
    parser.add_argument("--host", help="bind address (GATEWAY_HOST, 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (GATEWAY_PORT, 8000)")
    parser.add_argument("--redis-url", help="use Redis instead of the embedded store")
    parser.add_argument(
        "--sqlite-path",
        default="progress-gateway-demo.db",
        help="embedded store file; the demo's signing secret is kept beside it in <file>.secret "
        "(unless GATEWAY_SECRET is set), so tokens stay valid across restarts",
    )
    parser.add_argument("--user", default="demo", help="owner of the printed token (demo)")
    parser.add_argument(
        "--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"]
    )
    parser.set_defaults(handler=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    from progress_gateway.server import serve

    overrides: dict[str, object] = {
        "sqlite_path": args.sqlite_path,
        "drain_s": 1.0,
        "demo_page": True,
    }
    if args.host is not None:
        overrides["host"] = args.host
    if args.port is not None:
        overrides["port"] = args.port
    if args.redis_url:
        overrides["redis_url"] = args.redis_url
    secret_note = "from GATEWAY_SECRET"
    if not os.environ.get("GATEWAY_SECRET"):
        secret_path = Path(f"{args.sqlite_path}.secret")
        overrides["secret"] = demo_secret(secret_path)
        secret_note = f"kept in {secret_path.resolve()} (tokens outlive a restart)"
    settings = Settings(**overrides)  # type: ignore[arg-type]
    assert settings.secret is not None
    check_port_free(settings.host, settings.port)
    token = issue_token(settings.secret.get_secret_value(), args.user, 7 * 24 * 3600)
    base = f"http://{settings.host}:{settings.port}"
    print(
        f"""
progress-gateway demo — store: {settings.store_url()}
  secret    {secret_note}

  open      {base}/?token={token}
  token     {token}

  start a job:   curl -s -X POST {base}/exports -H "Authorization: Bearer $TOKEN" \\
                   -H 'Content-Type: application/json' \\
                   -d '{{"kind":"demo","params":{{"steps":20}}}}'
  watch it:      curl -sN "{base}/exports/<id>/events?token=$TOKEN"
  your jobs:     curl -s {base}/exports/active -H "Authorization: Bearer $TOKEN"

  (export TOKEN={token})
""",
        flush=True,
    )
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    serve(settings, args.log_level)
    return 0


def demo_secret(path: Path) -> str:
    """The demo's signing secret: read from ``path``, or made and saved there (mode 0600).

    Kept across restarts so that tokens printed by an earlier run, and the tabs opened with
    them, stay valid. A new secret is written to a private temporary file and hard-linked into
    place, so two demos starting at once agree on one secret and nobody reads a partial file.
    """
    try:
        return _read_secret(path)
    except FileNotFoundError:
        logging.getLogger(__name__).debug("no demo secret in %s yet: making one", path)
    made = secrets.token_urlsafe(32)
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(made + "\n")
        try:
            os.link(temporary, path)
        except FileExistsError:
            return _read_secret(path)  # another demo saved one first: use it
    finally:
        temporary.unlink()
    return made


def _read_secret(path: Path) -> str:
    secret = path.read_text().strip()
    try:
        check_secret(secret)
    except BadRequest as exc:
        raise BadRequest(f"{path}: {exc.message} (delete the file to make a new one)") from exc
    return secret


# Register a subcommand by appending its ``add_<name>(subparsers)`` here.
COMMANDS: list[Callable[[Subparsers], None]] = [add_token, add_serve, add_demo]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="Real-time job progress gateway.")
    subparsers = parser.add_subparsers(title="commands", dest="command", required=True)
    for add_command in COMMANDS:
        add_command(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand; argparse itself exits 2 on a malformed command line."""
    args = build_parser().parse_args(argv)
    handler: Handler = args.handler
    try:
        return handler(args)
    except BadRequest as exc:
        return _fail(EXIT_USAGE, exc.message)
    except ValidationError as exc:
        return _fail(EXIT_USAGE, *_describe_settings_error(exc))
    except GatewayError as exc:
        # Not the user's input (e.g. the store is down for ``serve``): a plain failure.
        return _fail(EXIT_FAILURE, exc.message)


def _fail(code: int, *lines: str) -> int:
    for line in lines:
        print(f"{PROG}: error: {line}", file=sys.stderr)
    return code


def _describe_settings_error(exc: ValidationError) -> list[str]:
    """One line per bad variable, named as the user set it, without echoing its value."""
    prefix = Settings.model_config.get("env_prefix", "")
    lines = []
    for error in exc.errors(include_url=False, include_input=False, include_context=False):
        name = str(error["loc"][0]) if error["loc"] else "settings"
        if not name.isupper():
            name = f"{prefix}{name}".upper()
        if name == "GATEWAY_REDIS_URL":
            name = "GATEWAY_REDIS_URL (or REDIS_URL)"
        lines.append(f"{name}: {error['msg'].removeprefix('Value error, ')}")
    return lines


if __name__ == "__main__":
    sys.exit(main())
