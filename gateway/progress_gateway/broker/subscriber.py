"""One Redis connection in subscribe mode, parsed with hiredis a whole read at a time.

redis-py's ``PubSub.get_message`` costs ~20 µs of Python per message (timeouts, retry wrappers,
push-handler dispatch, a dict per message): with one client per job that was a third of the
gateway's CPU. Here a read returns every complete reply in the bytes received, a list each, and
commands are written without waiting for their replies (subscribe confirmations arrive as
messages, in order). The URL forms are the ones the store accepts: ``redis://``, ``rediss://``
(TLS, ``?ssl_cert_reqs=none|optional|required``, ``?ssl_ca_certs=``) and ``unix://``, with an
optional username and password.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Mapping, Sequence
from typing import Any, cast

import hiredis
from redis.asyncio.connection import SSLConnection, parse_url

logger = logging.getLogger("progress_gateway.broker.subscriber")

READ_CHUNK = 1 << 16


class SubscriberError(ConnectionError):
    """The subscriber connection failed or was closed; the broker reconnects."""


class Subscriber:
    __slots__ = ("_failure", "_parser", "_reader", "_writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._parser = hiredis.Reader()
        self._failure: BaseException | None = None

    @classmethod
    async def connect(cls, url: str, *, within_s: float) -> Subscriber:
        options = parse_url(url)
        async with asyncio.timeout(within_s):
            if "path" in options:
                reader, writer = await asyncio.open_unix_connection(options["path"])
            else:
                tls = None
                if options.get("connection_class") is SSLConnection:
                    tls = tls_context(options)
                reader, writer = await asyncio.open_connection(
                    options.get("host", "localhost"), options.get("port", 6379), ssl=tls
                )
            subscriber = cls(reader, writer)
            try:
                password = options.get("password")
                if password:
                    username = options.get("username")
                    credentials = (username, password) if username else (password,)
                    await subscriber._command("AUTH", *credentials)
            except BaseException:
                subscriber.close()
                raise
        return subscriber

    async def _command(self, *args: str) -> Any:
        """One command and its reply: only before subscribing, when replies are in order."""
        self._writer.write(_pack(args))
        while True:
            replies = await self.read()
            if replies:
                reply = replies[0]
                if isinstance(reply, hiredis.ReplyError):
                    raise SubscriberError(f"Redis refused {args[0]}: {reply}")
                return reply

    def subscribe(self, channels: Sequence[bytes]) -> None:
        self._send(b"SUBSCRIBE", channels)

    def unsubscribe(self, channels: Sequence[bytes]) -> None:
        self._send(b"UNSUBSCRIBE", channels)

    def _send(self, command: bytes, channels: Sequence[bytes]) -> None:
        if self._failure is not None or self._writer.is_closing():
            raise SubscriberError("the subscriber connection is closed")
        self._writer.write(_pack((command, *channels)))

    async def drain(self) -> None:
        await self._writer.drain()

    async def read(self) -> list[Any]:
        """Every complete reply in the next bytes to arrive (possibly none yet)."""
        if self._failure is not None:
            raise SubscriberError(str(self._failure)) from self._failure
        data = await self._reader.read(READ_CHUNK)
        if self._failure is not None:
            raise SubscriberError(str(self._failure)) from self._failure
        if not data:
            raise SubscriberError("Redis closed the subscriber connection")
        parser = self._parser
        parser.feed(data)
        replies = []
        while (reply := parser.gets()) is not False:
            replies.append(reply)
        return replies

    def fail(self, reason: BaseException) -> None:
        """Abandon the connection: the pending and every later ``read`` raise ``reason``.

        Aborted, not closed: a close waits to flush what is buffered, and a silent peer never
        takes it, so a ``drain`` blocked on the full buffer would never wake.
        """
        self._failure = reason
        self._writer.transport.abort()
        self._reader.feed_eof()

    def close(self) -> None:
        self._writer.close()
        # A read blocked on a socket that is closed under it still wakes with EOF.
        self._reader.feed_eof()

    async def wait_closed(self) -> None:
        try:
            await self._writer.wait_closed()
        except (OSError, ssl.SSLError) as exc:
            # Closing a broken connection: its failure was reported where it happened.
            logger.debug("closing the subscriber connection: %s", exc)


def _pack(args: Sequence[str | bytes]) -> bytes:
    # hiredis's stub types the argument as a 1-tuple; it takes any tuple of str/bytes/numbers.
    packed: bytes = hiredis.pack_command(cast(Any, tuple(args)))
    return packed


def tls_context(options: Mapping[str, object]) -> ssl.SSLContext:
    """The TLS context a ``rediss://`` URL's options (from ``parse_url``) ask for."""
    cafile = options.get("ssl_ca_certs")
    context = ssl.create_default_context(cafile=str(cafile) if cafile else None)
    requirement = str(options.get("ssl_cert_reqs", "required")).lower()
    if requirement == "none":
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif requirement == "optional":
        context.check_hostname = False
        context.verify_mode = ssl.CERT_OPTIONAL
    elif requirement != "required":
        raise ValueError(f"ssl_cert_reqs must be none, optional or required, not {requirement!r}")
    return context
