"""The asyncio side of the SIP core: one SipTransport, one TransactionLayer, one timer (the edge's
B2BUA and the test UA both run on it).

The transaction layer stays sans-I/O; this class feeds it with the loop's clock and what the network
delivers, sends what it returns, and turns client transactions into futures so the B2BUA's call
logic reads top to bottom (`response = await stack.request(...)`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from trunkline.sip.errors import LocalProtocolError
from trunkline.sip.message import Message, Request, Response
from trunkline.sip.transaction import (
    Action,
    Addr,
    Deliver,
    Send,
    Timeout,
    Timers,
    TransactionLayer,
    TransportError,
    TxKey,
)
from trunkline.sip.transport import SipTransport

log = logging.getLogger(__name__)


class NoAnswer(TimeoutError):
    """A client transaction ended without a final response: timer B/F fired or the transport failed."""


@dataclass
class Incoming:
    """A request delivered to the TU. `key` names its server transaction (None for an ACK of a 2xx)."""

    request: Request
    addr: Addr
    transport: str
    key: TxKey | None


Provisional = Callable[[Response], None]


class SipStack:
    def __init__(
        self,
        on_request: Callable[[Incoming], Awaitable[None] | None],
        on_stray_response: Callable[[Response, Addr, str], None],
        timers: Timers | None = None,
        transport: SipTransport | None = None,
    ) -> None:
        self.on_request = on_request
        self.on_stray_response = on_stray_response
        self.layer = TransactionLayer(timers or Timers())
        self.transport = transport or SipTransport(self._on_message)
        self.transport.on_message = self._on_message
        self._pending: dict[TxKey, tuple[asyncio.Future[Response], Provisional | None]] = {}
        self._timer: asyncio.Handle | None = None
        self._timer_at = 0.0  # monotonic time the timer was armed for
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def timers(self) -> Timers:
        return self.layer.timers

    async def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        for task in list(self._tasks):
            task.cancel()
        await self.transport.close()

    # -- TU -> network -----------------------------------------------------------------------------
    def request(
        self, request: Request, addr: Addr, transport: str, on_provisional: Provisional | None = None
    ) -> asyncio.Future[Response]:
        """Start a client transaction; the future gets the final response or raises NoAnswer."""
        future: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        actions = self.layer.send_request(request, addr, transport, time.monotonic())
        self._pending[self._client_key(request)] = (future, on_provisional)
        self._run(actions)
        return future

    def abandon(self, request: Request) -> None:
        """Stop a client transaction that never got a provisional response (no CANCEL is allowed
        then, RFC 3261 9.1): it stops retransmitting and its future is cancelled."""
        key = self._client_key(request)
        self.layer.transactions.pop(key, None)
        entry = self._pending.pop(key, None)
        if entry:
            entry[0].cancel()

    def send_ack(self, ack: Request, addr: Addr, transport: str) -> None:
        self._run(self.layer.send_request(ack, addr, transport, time.monotonic()))

    def respond(self, response: Response) -> None:
        try:
            self._run(self.layer.send_response(response, time.monotonic()))
        except LocalProtocolError as exc:  # the transaction is gone (e.g. timed out): nothing to send on
            log.debug("response %s not sent: %s", response.status, exc)

    def resend(self, data: bytes, addr: Addr, transport: str) -> None:
        """Send bytes outside any transaction (2xx retransmissions of the dialog user)."""
        self.transport.send(data, addr, transport)

    @staticmethod
    def _client_key(request: Request) -> TxKey:
        return ("client", request.top_via.branch or "", request.cseq.method)

    # -- network -> TU -----------------------------------------------------------------------------
    def _on_message(self, msg: Message, addr: Addr, transport: str) -> None:
        self._run(self.layer.receive(msg, addr, transport, time.monotonic()))

    def _run(self, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, Send):
                self.transport.send(action.data, action.addr, action.transport)
            elif isinstance(action, Deliver):
                self._deliver(action)
            elif isinstance(action, Timeout | TransportError):
                entry = self._pending.pop(action.transaction, None)
                if entry and not entry[0].done():
                    why = "timed out" if isinstance(action, Timeout) else "transport error"
                    entry[0].set_exception(NoAnswer(f"{action.request.method} {why}"))
        self._arm()

    def _deliver(self, d: Deliver) -> None:
        msg = d.message
        if isinstance(msg, Response):
            entry = self._pending.get(d.transaction) if d.transaction else None
            if entry is None or entry[0].done():
                self.on_stray_response(msg, d.addr, d.transport)
            elif msg.status < 200:
                if entry[1] is not None:
                    entry[1](msg)
            else:
                del self._pending[d.transaction]  # type: ignore[arg-type]
                entry[0].set_result(msg)
            return
        assert isinstance(msg, Request)
        result = self.on_request(Incoming(msg, d.addr, d.transport, d.transaction))
        if result is not None:
            task = asyncio.ensure_future(result)
            self._tasks.add(task)
            task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("request handler failed", exc_info=task.exception())

    def _arm(self) -> None:
        """Keep one loop timer for the earliest transaction deadline. A timer that fires no later than
        needed is left alone (firing for a deadline that moved is cheap; cancelling and re-arming on
        every message is not). Never ask the loop handle for `when()`: uvloop returns a plain Handle,
        without it, for a delay of zero (a deadline already past under load)."""
        at = self.layer.next_deadline()
        if at is None:
            return
        if self._timer is not None:
            if self._timer_at <= at:
                return
            self._timer.cancel()
        self._timer_at = at
        self._timer = asyncio.get_running_loop().call_later(max(0.0, at - time.monotonic()), self._fire)

    def _fire(self) -> None:
        self._timer = None
        self._run(self.layer.handle_timer(time.monotonic()))
