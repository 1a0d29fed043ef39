"""The HTTP/1.1 protocol the service runs on: uvicorn's h11 protocol, with a deadline for the
request head.

uvicorn times out an idle kept-alive connection after a response, but a connection that never
sends a complete request head (a half-open socket, or a client trickling header bytes) is kept
for ever, and each one holds a file descriptor. Here a connection must deliver a complete request
head within :data:`HEAD_TIMEOUT` seconds of opening, or of the data that began it; otherwise it is
closed. A request whose head arrived is not affected, however long its body or solve takes.
"""

from __future__ import annotations

import asyncio

from uvicorn.protocols.http.h11_impl import H11Protocol

HEAD_TIMEOUT = 10.0


class HeadTimeoutProtocol(H11Protocol):
    head_timeout = HEAD_TIMEOUT

    def connection_made(self, transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_deadline: asyncio.TimerHandle | None = None
        self._arm()

    def _idle(self) -> bool:
        return self.cycle is None or self.cycle.response_complete

    def _arm(self) -> None:
        if self._head_deadline is None:
            self._head_deadline = self.loop.call_later(self.head_timeout, self._head_expired)

    def _disarm(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _head_expired(self) -> None:
        self._head_deadline = None
        if self._idle() and not self.transport.is_closing():
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        idle_before = self._idle()
        super().data_received(data)
        if not self._idle():
            self._disarm()  # a request head arrived: its cycle runs without this deadline
        elif idle_before:
            self._arm()  # bytes of a head that is not complete yet

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._disarm()  # uvicorn's keep-alive timeout covers the idle connection from here

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)
