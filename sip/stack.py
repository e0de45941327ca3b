"""The asyncio side of the SIP core: one SipTransport, one TransactionLayer, one timer (the edge's
B2BUA and the test UA both run on it).

The transaction layer stays sans-I/O; this class feeds it with the loop's clock and what the network
delivers, sends what it returns, and turns client transactions into futures so the B2BUA's call
logic reads top to bottom (`response = await stack.request(...)`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Protocol

from trunkline.core.state import StoreUnavailable
from trunkline.sip.errors import LocalProtocolError, SipParseError
from trunkline.sip.flood import FloodGuard
from trunkline.sip.ids import new_tag
from trunkline.sip.message import Message, Request, Response
from trunkline.sip.transaction import (
    AckTimeout,
    Action,
    Addr,
    Deliver,
    Send,
    Timeout,
    TimerFired,
    Timers,
    TransactionLayer,
    TransportError,
    TxKey,
)
from trunkline.sip.transport import SipTransport, StreamLimits, at_doubling

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
OnRequest = Callable[[Incoming], Awaitable[None] | None]
OnStrayResponse = Callable[[Response, Addr, str], None]
OnAckTimeout = Callable[[tuple[str, str, str]], None]


def error_status(exc: Exception) -> tuple[int, str]:
    """The final response for a request whose handler raised `exc`."""
    if isinstance(exc, SipParseError):
        return exc.status, exc.reason
    if isinstance(exc, StoreUnavailable):
        return 503, "Service Unavailable"
    return 500, "Server Internal Error"


class TimerHandle(Protocol):
    def cancel(self) -> None: ...


class Stack(Protocol):
    """What a transaction user (the edge's B2BUA) needs of a SIP stack; `SipStack` is the real one,
    tests drive the B2BUA through an in-memory one. Every wait of the TU goes through `call_later`,
    on the stack's clock."""

    @property
    def timers(self) -> Timers: ...

    def bind(
        self, on_request: OnRequest, on_stray_response: OnStrayResponse, on_ack_timeout: OnAckTimeout
    ) -> None:
        """Where requests, stray responses and unacknowledged 2xx go."""

    def request(
        self, request: Request, addr: Addr, transport: str, on_provisional: Provisional | None = None
    ) -> asyncio.Future[Response]: ...

    def abandon(self, request: Request) -> None: ...

    def send_ack(self, ack: Request, addr: Addr, transport: str) -> None: ...

    def respond(self, response: Response) -> None: ...

    def send_stateless(self, response: Response, addr: Addr, transport: str) -> None:
        """A response outside any server transaction (the caller of a call adopted while ringing)."""

    def stop_answer(self, dialog: tuple[str, str, str]) -> None:
        """Stop retransmitting the 2xx of this dialog (Call-ID, our tag, their tag)."""

    def discard(self, key: TxKey | None) -> None:
        """End the server transaction `key` unanswered: nothing is ever sent for it."""

    def vouch(self, source_ip: str) -> None:
        """`source_ip` authenticated: its flood budget grows for a while (sip.flood.VOUCH_FACTOR)."""

    def invite_for_cancel(self, cancel: Request) -> TxKey | None:
        """The live INVITE server transaction a CANCEL matches (RFC 3261 9.2), or None."""

    def verify_tls_name(self, addr: Addr, name: str) -> None:
        """A TLS connection to `addr` must present a certificate for `name` (RFC 5922)."""

    def local_address(self, transport: str) -> Addr | None: ...

    def call_later(self, delay: float, callback: Callable[[], None]) -> TimerHandle: ...

    async def close(self) -> None: ...


class _LayerTimer:
    """A TU timer of the transaction layer, cancellable like a loop handle."""

    __slots__ = ("_key", "_stack")

    def __init__(self, stack: SipStack, key: TxKey) -> None:
        self._stack, self._key = stack, key

    def cancel(self) -> None:
        self._stack.layer.cancel_timer(self._key)
        self._stack._callbacks.pop(self._key, None)


class SipStack:
    def __init__(
        self,
        on_request: OnRequest | None = None,
        on_stray_response: OnStrayResponse | None = None,
        timers: Timers | None = None,
        transport: SipTransport | None = None,
    ) -> None:
        self.on_request: OnRequest = on_request or (lambda inc: None)
        self.on_stray_response: OnStrayResponse = on_stray_response or (lambda r, a, t: None)
        self.on_ack_timeout: OnAckTimeout = lambda dialog: None
        self.layer = TransactionLayer(timers or Timers())
        self.transport = transport or SipTransport(self._on_message)
        self.transport.on_message = self._on_message
        self.layer.max_size = self.transport.max_size  # one limit for datagrams and stream messages
        self._pending: dict[TxKey, tuple[asyncio.Future[Response], Provisional | None]] = {}
        self._callbacks: dict[TxKey, Callable[[], None]] = {}
        self._timer: asyncio.Handle | None = None
        self._timer_at = 0.0  # monotonic time the timer was armed for
        self._tasks: set[asyncio.Future[None]] = set()
        self.core_failures = 0  # messages the core failed on (a bug, not the peer's error): dropped

    def bind(
        self, on_request: OnRequest, on_stray_response: OnStrayResponse, on_ack_timeout: OnAckTimeout
    ) -> None:
        self.on_request, self.on_stray_response = on_request, on_stray_response
        self.on_ack_timeout = on_ack_timeout

    def call_later(self, delay: float, callback: Callable[[], None]) -> TimerHandle:
        key = self.layer.set_timer(delay, time.monotonic())
        self._callbacks[key] = callback
        self._arm()
        return _LayerTimer(self, key)

    def invite_for_cancel(self, cancel: Request) -> TxKey | None:
        return self.layer.invite_for_cancel(cancel)

    def defend(self, stream: StreamLimits, flood: FloodGuard | None) -> None:
        """Put the signalling defences in front of parsing. Call before listening (a TLS handshake's
        bound is taken at listen time); `flood` may be replaced later (`set_flood_guard`)."""
        self.transport.limits = stream
        self.transport.flood = flood

    @property
    def flood_guard(self) -> FloodGuard | None:
        return self.transport.flood

    def vouch(self, source_ip: str) -> None:
        """`source_ip` proved who it is: the flood guard gives it a larger budget for a while."""
        if self.transport.flood is not None:
            self.transport.flood.vouch(source_ip, time.monotonic())

    def set_flood_guard(self, flood: FloodGuard | None) -> None:
        """A new guard (the trunks' and carriers' networks changed); the next datagram uses it."""
        self.transport.flood = flood

    def discard(self, key: TxKey | None) -> None:
        """End a server transaction without a word on the wire (a source the edge no longer answers):
        its retransmissions start a new one, which the TU discards again."""
        if key is not None:
            self.layer.forget_server(key)

    def verify_tls_name(self, addr: Addr, name: str) -> None:
        self.transport.tls_names[addr] = name

    def local_address(self, transport: str) -> Addr | None:
        return self.transport.local.get(transport)

    def stop_answer(self, dialog: tuple[str, str, str]) -> None:
        self.layer.stop_answer(dialog)

    def send_stateless(self, response: Response, addr: Addr, transport: str) -> None:
        self.transport.send(response.to_bytes(), addr, transport)

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
        self.layer.forget_client(key)
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

    @staticmethod
    def _client_key(request: Request) -> TxKey:
        return ("client", request.top_via.branch or "", request.cseq.method)

    # -- network -> TU -----------------------------------------------------------------------------
    def _on_message(self, item: bytes | Message, addr: Addr, transport: str) -> None:
        try:
            if isinstance(item, bytes):
                actions = self.layer.receive_data(item, addr, transport, time.monotonic())
            else:
                actions = self.layer.receive_message(item, addr, transport, time.monotonic())
        except Exception as exc:
            # A peer's malformed message is a SipParseError the layer answers; anything else is our
            # bug (in the compiled core, a value of an unexpected type is a TypeError). The message is
            # dropped and the stack goes on; logged at the 1st, 2nd, 4th, 8th... so a peer repeating
            # it cannot flood the log.
            self.core_failures += 1
            if at_doubling(self.core_failures):
                log.error("SIP core failed on a message from %s (%d so far): %r", addr, self.core_failures,
                          exc)  # fmt: skip
            return
        self._run(actions)

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
            elif isinstance(action, TimerFired):
                callback = self._callbacks.pop(action.timer, None)
                if callback is not None:
                    self._call_safely(callback)
            elif isinstance(action, AckTimeout):
                self._call_safely(partial(self.on_ack_timeout, action.dialog))
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
        incoming = Incoming(msg, d.addr, d.transport, d.transaction)
        try:
            result = self.on_request(incoming)
        except Exception as exc:
            self._handler_failed(incoming, exc)
            return
        if result is not None:
            task = asyncio.ensure_future(result)
            self._tasks.add(task)
            task.add_done_callback(partial(self._task_done, incoming))

    @staticmethod
    def _call_safely(callback: Callable[[], None]) -> None:
        try:
            callback()
        except Exception:  # one failing timer must not stop the others of this pass
            log.exception("timer callback failed")

    def _task_done(self, incoming: Incoming, task: asyncio.Future[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None and isinstance(exc, Exception):
            self._handler_failed(incoming, exc)

    def _handler_failed(self, incoming: Incoming, exc: Exception) -> None:
        """A TU handler raised: one log line (no traceback per packet) and a final response, unless
        the request already got one (the transaction absorbs a second) or is an ACK."""
        status, reason = error_status(exc)
        request = incoming.request
        log.error(
            "request handler failed: %s %s from %s: %r", request.method, request.call_id, incoming.addr, exc
        )
        if incoming.key is not None:
            with contextlib.suppress(SipParseError):
                self.respond(request.create_response(status, reason, to_tag=new_tag()))

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
