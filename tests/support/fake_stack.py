"""An in-memory SIP stack for unit tests of the edge (the `Stack` protocol): it records what the
edge sends, lets the test answer the edge's client transactions and deliver requests to it, and
runs the edge's timers on a fake clock that only `advance()` moves."""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field

from trunkline.sip.message import Request, Response, parse_message
from trunkline.sip.stack import (
    Incoming,
    NoAnswer,
    OnAckTimeout,
    OnRequest,
    OnStrayResponse,
    Provisional,
    TimerHandle,
)
from trunkline.sip.transaction import Addr, Timers, TxKey, server_key

EPOCH = 1_800_000_000.0  # the wall clock the edge sees when the fake clock reads 0


@dataclass
class ClientTx:
    """A request the edge sent; the test answers it with `FakeStack.reply`."""

    request: Request
    addr: Addr
    transport: str
    future: asyncio.Future[Response]
    on_provisional: Provisional | None
    abandoned: bool = False

    @property
    def method(self) -> str:
        return self.request.method


@dataclass
class _Timer:
    at: float
    callback: Callable[[], None]
    cancelled: bool = False

    def cancel(self) -> None:
        self.cancelled = True


@dataclass
class FakeStack:
    timers: Timers = field(default_factory=Timers)
    now: float = 0.0
    sent: list[ClientTx] = field(default_factory=list)
    responses: list[Response] = field(default_factory=list)
    acks: list[tuple[Request, Addr, str]] = field(default_factory=list)
    stateless: list[tuple[Response, Addr, str]] = field(default_factory=list)
    stopped_answers: list[tuple[str, str, str]] = field(default_factory=list)
    tls_names: dict[Addr, str] = field(default_factory=dict)
    _heap: list[tuple[float, int, _Timer]] = field(default_factory=list)
    _seq: itertools.count[int] = field(default_factory=itertools.count)
    _invites: dict[TxKey, Request] = field(default_factory=dict)  # live INVITE server transactions
    _handlers: list[asyncio.Future[None]] = field(default_factory=list)

    def clock(self) -> float:
        """The edge's wall clock, moved by `advance` only."""
        return EPOCH + self.now

    # -- the Stack protocol ----------------------------------------------------------------------
    def bind(
        self, on_request: OnRequest, on_stray_response: OnStrayResponse, on_ack_timeout: OnAckTimeout
    ) -> None:
        self.on_request, self.on_stray_response, self.on_ack_timeout = (
            on_request,
            on_stray_response,
            on_ack_timeout,
        )

    def request(
        self, request: Request, addr: Addr, transport: str, on_provisional: Provisional | None = None
    ) -> asyncio.Future[Response]:
        future: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        self.sent.append(ClientTx(request, addr, transport, future, on_provisional))
        return future

    def abandon(self, request: Request) -> None:
        for tx in self.sent:
            if tx.request is request:
                tx.abandoned = True
                tx.future.cancel()

    def send_ack(self, ack: Request, addr: Addr, transport: str) -> None:
        self.acks.append((ack, addr, transport))

    def respond(self, response: Response) -> None:
        self.responses.append(response)
        if response.status >= 200 and response.cseq.method == "INVITE":
            self._invites.pop(server_key(response, "INVITE"), None)

    def send_stateless(self, response: Response, addr: Addr, transport: str) -> None:
        self.stateless.append((response, addr, transport))

    def stop_answer(self, dialog: tuple[str, str, str]) -> None:
        self.stopped_answers.append(dialog)

    def invite_for_cancel(self, cancel: Request) -> TxKey | None:
        key = server_key(cancel, "INVITE")
        return key if key in self._invites else None

    def verify_tls_name(self, addr: Addr, name: str) -> None:
        self.tls_names[addr] = name

    def local_address(self, transport: str) -> Addr | None:
        return ("127.0.0.1", 5060)

    def call_later(self, delay: float, callback: Callable[[], None]) -> TimerHandle:
        timer = _Timer(self.now + max(0.0, delay), callback)
        heapq.heappush(self._heap, (timer.at, next(self._seq), timer))
        return timer

    async def close(self) -> None:
        return None

    # -- the test's side -------------------------------------------------------------------------
    async def deliver(
        self, data: str | bytes, addr: Addr = ("127.0.0.2", 5060), transport: str = "udp"
    ) -> None:
        """A request from the network, then the edge runs until it waits."""
        message = parse_message(data.encode() if isinstance(data, str) else data)
        assert isinstance(message, Request)
        message.validate()
        key: TxKey | None = None
        if message.method != "ACK":
            key = server_key(message, message.method)
            if message.method == "INVITE":
                self._invites[key] = message
        result = self.on_request(Incoming(message, addr, transport, key))
        if result is not None:
            self._handlers.append(asyncio.ensure_future(result))
        await self.settle()

    async def settle(self) -> None:
        """Let every task of the edge run until all of them wait (on the network or a timer)."""
        for _ in range(200):
            await asyncio.sleep(0)
        for handler in [h for h in self._handlers if h.done()]:
            self._handlers.remove(handler)
            handler.result()  # a handler that failed fails the test

    async def advance(self, seconds: float) -> None:
        """Move the clock, firing every timer due on the way, in order."""
        end = self.now + seconds
        while self._heap and self._heap[0][0] <= end:
            at, _, timer = heapq.heappop(self._heap)
            if timer.cancelled:
                continue
            self.now = max(self.now, at)
            timer.callback()
            await self.settle()
        self.now = end
        await self.settle()

    async def reply(
        self, tx: ClientTx, status: int, *headers: str, body: bytes = b"", to_tag: str | None = "callee"
    ) -> Response:
        """Answer a request the edge sent (a 1xx reaches its provisional callback)."""
        response = tx.request.create_response(status, to_tag=to_tag if status > 100 else None)
        for header in headers:
            name, _, value = header.partition(":")
            response.add(name.strip(), value.strip())
        if body:
            response.add("Content-Type", "application/sdp")
            response.body = body
        if status < 200:
            if tx.on_provisional is not None:
                tx.on_provisional(response)
        elif not tx.future.done():
            tx.future.set_result(response)
        await self.settle()
        return response

    async def no_answer(self, tx: ClientTx) -> None:
        """The transaction timed out without a final response."""
        tx.future.set_exception(NoAnswer(f"{tx.method} timed out"))
        await self.settle()

    def requests(self, method: str) -> list[ClientTx]:
        return [tx for tx in self.sent if tx.method == method]

    def statuses(self) -> list[int]:
        return [r.status for r in self.responses]
