"""Transaction layer (RFC 3261 section 17, RFC 6026), sans-I/O.

Feed it what arrives and what the TU wants to send, with the current time; it returns actions
(`Send`, `Deliver`, `Timeout`, `TransportError`) and `next_deadline()` says when to call
`handle_timer(now)`. Every state machine is a table (state, event) -> (new state, actions).

Automatic 100 Trying: an INVITE server transaction sends "100 Trying" `Timers.trying` seconds
(default 0.2, RFC 3261 17.2.1) after the INVITE arrived unless the TU sent a provisional response
first; `trying=0` answers at once.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, Final

from trunkline.sip.errors import LocalProtocolError, SipParseError
from trunkline.sip.headers import Via
from trunkline.sip.message import MAX_MESSAGE_SIZE, Message, Request, Response, parse_message
from trunkline.sip.peer_log import peer_log
from trunkline.sip.refusal import refusal_for
from trunkline.sip.uri import uri_equal

Addr = tuple[str, int]
TxKey = tuple[str, ...]
RELIABLE: Final = frozenset({"tcp", "tls", "ws", "wss", "sctp"})
# A server transaction the TU leaves unanswered is answered 500 after 64*T1; an INVITE that got a
# provisional may ring this long after its latest one (RFC 3261 13.3.1.1 suggests 3 minutes and up).
INVITE_ANSWER_AFTER_PROVISIONAL: Final = 300.0


@dataclass(frozen=True, slots=True)
class Timers:
    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0
    trying: float = 0.2


# -- actions returned to the caller ------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Send:
    data: bytes
    addr: Addr
    transport: str


@dataclass(frozen=True, slots=True)
class Deliver:
    """A message for the TU; `transaction` is None for stray responses and ACKs of 2xx."""

    message: Message
    addr: Addr
    transport: str
    transaction: TxKey | None


@dataclass(frozen=True, slots=True)
class Timeout:
    transaction: TxKey
    request: Request


@dataclass(frozen=True, slots=True)
class TransportError:
    transaction: TxKey
    request: Request


@dataclass(frozen=True, slots=True)
class AckTimeout:
    """A 2xx the layer retransmitted for 64*T1 never got its ACK (RFC 3261 13.3.1.4): the dialog
    (Call-ID, our tag, their tag) should be ended by the TU."""

    dialog: tuple[str, str, str]


@dataclass(frozen=True, slots=True)
class TimerFired:
    """A timer the TU set with `set_timer` is due."""

    timer: TxKey


Action = Send | Deliver | Timeout | TransportError | AckTimeout | TimerFired


def stamp_via(request: Request, source: Addr) -> None:
    """RFC 3261 18.2.1 and RFC 3581 4, from the packet's real source only: whatever received= or
    rport= value the peer wrote is replaced (a forged one would send our responses elsewhere)."""
    via = request.top_via
    via.params.pop("received", None)
    if "rport" in via.params:
        via.params["rport"] = str(source[1])
        via.params["received"] = source[0]
    elif via.host.strip("[]") != source[0]:
        via.params["received"] = source[0]


def response_destination(via: Via, source: Addr, transport: str) -> Addr:
    """Where a response goes (RFC 3261 18.2.2, RFC 3581 4): received/rport, else sent-by."""
    if transport in RELIABLE:
        return source
    rport = via.params.get("rport")
    host = via.params.get("received") or via.host
    port = int(rport) if rport else (via.port or 5060)
    return host.strip("[]"), port


def _status_event(status: int, invite: bool) -> str:
    if status < 200:
        return "1xx"
    if invite and status < 300:
        return "2xx"
    return "final"


# -- transactions ---------------------------------------------------------------------------------
Table = dict[tuple[str, str], tuple[str, tuple[str, ...]]]
Step = Callable[["Transaction", float, "Message | None", "list[Action]"], None]


class Transaction:
    """One state machine; subclasses only provide TABLE and the start state.

    Once a transaction only absorbs retransmissions until a timer ends it, it lets go of its request
    (step `forget`): thousands of transactions wait out Timers J, L and M at a time, and a parsed
    request is some twenty objects for the garbage collector to walk over on every full collection."""

    TABLE: ClassVar[Table]
    __slots__ = (
        "_request",
        "ack",
        "addr",
        "deadlines",
        "interval",
        "key",
        "last",
        "started",
        "state",
        "timers",
        "transport",
    )

    def __init__(
        self,
        key: TxKey,
        request: Request | None,
        addr: Addr,
        transport: str,
        timers: Timers,
        state: str = "",
        last: bytes | None = None,  # last message sent (request, or response for servers)
        # Where the deadlines this transaction starts are announced (the layer's timer queue).
        started: list[tuple[float, TxKey, str]] | None = None,
    ) -> None:
        self.key = key
        self._request = request
        self.addr = addr
        self.transport = transport
        self.timers = timers
        self.state = state
        self.deadlines: dict[str, float] = {}
        self.interval = 0.0
        self.last = last
        self.ack: bytes | None = None
        self.started = started

    @property
    def request(self) -> Request:
        """The request that began the transaction (gone once it is only waiting for its last timer)."""
        if self._request is None:
            raise LocalProtocolError(f"transaction {self.key} no longer holds its request")
        return self._request

    @property
    def reliable(self) -> bool:
        return self.transport in RELIABLE

    def event(self, name: str, now: float, msg: Message | None = None) -> list[Action]:
        entry = _STEPS[type(self)].get((self.state, name))
        if entry is None:
            return []  # not meaningful in this state: absorbed
        self.state, steps = entry
        out: list[Action] = []
        for step in steps:
            step(self, now, msg, out)
        if self.state == "terminated":
            self.deadlines.clear()
        return out

    # steps shared by the tables
    def _deliver(self, now: float, msg: Message | None, out: list[Action]) -> None:
        assert msg is not None
        out.append(Deliver(msg, self.addr, self.transport, self.key))

    def _send(self, now: float, msg: Message | None, out: list[Action]) -> None:
        assert msg is not None
        self.last = msg.to_bytes()
        out.append(Send(self.last, self.addr, self.transport))

    def _resend(self, now: float, msg: Message | None, out: list[Action]) -> None:
        if self.last is not None:
            out.append(Send(self.last, self.addr, self.transport))

    def _timeout(self, now: float, msg: Message | None, out: list[Action]) -> None:
        out.append(Timeout(self.key, self.request))

    def _error(self, now: float, msg: Message | None, out: list[Action]) -> None:
        out.append(TransportError(self.key, self.request))

    def _stop(self, now: float, msg: Message | None, out: list[Action]) -> None:
        self.deadlines.clear()

    def _answer_500(self, now: float, msg: Message | None, out: list[Action]) -> None:
        """The TU never answered: the server transaction answers for it, so that it ends."""
        self.deadlines.clear()
        self._send(now, self.request.create_response(500, "Server Internal Error (no answer)"), out)

    def _forget(self, now: float, msg: Message | None, out: list[Action]) -> None:
        self._request = None

    def start(self, name: str, now: float, delay: float) -> None:
        at = now + delay
        self.deadlines[name] = at
        if self.started is not None:
            self.started.append((at, self.key, name))


class InviteClient(Transaction):
    """RFC 3261 17.1.1 with RFC 6026 Accepted state."""

    __slots__ = ()

    TABLE: ClassVar[Table] = {
        ("calling", "timer_a"): ("calling", ("resend", "backoff_a")),
        ("calling", "timer_b"): ("terminated", ("timeout",)),
        ("calling", "1xx"): ("proceeding", ("stop", "deliver")),
        ("calling", "2xx"): ("accepted", ("stop", "deliver", "start_m", "forget")),
        ("calling", "final"): ("completed", ("stop", "deliver", "send_ack", "start_d", "forget")),
        ("calling", "transport_error"): ("terminated", ("error",)),
        ("proceeding", "1xx"): ("proceeding", ("deliver",)),
        ("proceeding", "2xx"): ("accepted", ("deliver", "start_m", "forget")),
        ("proceeding", "final"): ("completed", ("deliver", "send_ack", "start_d", "forget")),
        ("completed", "final"): ("completed", ("resend_ack",)),
        ("completed", "timer_d"): ("terminated", ()),
        ("accepted", "2xx"): ("accepted", ("deliver",)),
        ("accepted", "timer_m"): ("terminated", ()),
    }

    def begin(self, now: float) -> None:
        self.state = "calling"
        if not self.reliable:
            self.interval = self.timers.t1
            self.start("timer_a", now, self.interval)
        self.start("timer_b", now, 64 * self.timers.t1)

    def _backoff_a(self, now: float, msg: Message | None, out: list[Action]) -> None:
        self.interval *= 2
        self.start("timer_a", now, self.interval)

    def _start_d(self, now: float, msg: Message | None, out: list[Action]) -> None:
        self.start("timer_d", now, 0.0 if self.reliable else max(32.0, 64 * self.timers.t1))

    def _start_m(self, now: float, msg: Message | None, out: list[Action]) -> None:
        self.start("timer_m", now, 64 * self.timers.t1)

    def _send_ack(self, now: float, msg: Message | None, out: list[Action]) -> None:
        assert isinstance(msg, Response)
        self.ack = build_ack(self.request, msg).to_bytes()
        out.append(Send(self.ack, self.addr, self.transport))

    def _resend_ack(self, now: float, msg: Message | None, out: list[Action]) -> None:
        if self.ack is not None:
            out.append(Send(self.ack, self.addr, self.transport))


class NonInviteClient(Transaction):
    """RFC 3261 17.1.2."""

    __slots__ = ()

    TABLE: ClassVar[Table] = {
        ("trying", "timer_e"): ("trying", ("resend", "backoff_e")),
        ("trying", "timer_f"): ("terminated", ("timeout",)),
        ("trying", "1xx"): ("proceeding", ("deliver",)),
        ("trying", "final"): ("completed", ("deliver", "start_k", "forget")),
        ("trying", "transport_error"): ("terminated", ("error",)),
        ("proceeding", "timer_e"): ("proceeding", ("resend", "backoff_e")),
        ("proceeding", "timer_f"): ("terminated", ("timeout",)),
        ("proceeding", "1xx"): ("proceeding", ("deliver",)),
        ("proceeding", "final"): ("completed", ("deliver", "start_k", "forget")),
        ("proceeding", "transport_error"): ("terminated", ("error",)),
        ("completed", "timer_k"): ("terminated", ()),
    }

    def begin(self, now: float) -> None:
        self.state = "trying"
        if not self.reliable:
            self.interval = self.timers.t1
            self.start("timer_e", now, self.interval)
        self.start("timer_f", now, 64 * self.timers.t1)

    def _backoff_e(self, now: float, msg: Message | None, out: list[Action]) -> None:
        # In Proceeding the interval is T2 straight away (17.1.2.2).
        self.interval = (
            self.timers.t2 if self.state == "proceeding" else min(2 * self.interval, self.timers.t2)
        )
        self.start("timer_e", now, self.interval)

    def _start_k(self, now: float, msg: Message | None, out: list[Action]) -> None:
        self.deadlines.clear()
        self.start("timer_k", now, 0.0 if self.reliable else self.timers.t4)


QUIET_FINALS: Final = (b"401", b"403", b"407")  # status codes of final responses never retransmitted


class InviteServer(Transaction):
    """RFC 3261 17.2.1 with RFC 6026 Accepted state."""

    __slots__ = ()

    TABLE: ClassVar[Table] = {
        ("proceeding", "request"): ("proceeding", ("resend",)),
        ("proceeding", "timer_trying"): ("proceeding", ("send_trying",)),
        ("proceeding", "tu_1xx"): ("proceeding", ("send", "extend_answer")),
        ("proceeding", "tu_2xx"): ("accepted", ("stop", "send", "start_l", "forget")),
        ("proceeding", "timer_answer"): ("completed", ("answer_500", "start_g_h")),
        ("proceeding", "tu_final"): ("completed", ("stop", "send", "start_g_h")),
        ("proceeding", "transport_error"): ("terminated", ("error",)),
        ("completed", "request"): ("completed", ("resend",)),
        ("completed", "timer_g"): ("completed", ("resend", "backoff_g")),
        ("completed", "ack"): ("confirmed", ("stop", "start_i", "forget")),
        ("completed", "timer_h"): ("terminated", ("timeout",)),
        ("completed", "transport_error"): ("terminated", ("error",)),
        ("confirmed", "timer_i"): ("terminated", ()),
        ("accepted", "ack"): ("accepted", ("deliver",)),
        ("accepted", "tu_2xx"): ("accepted", ("send",)),
        ("accepted", "timer_l"): ("terminated", ()),
    }

    def begin(self, now: float) -> None:
        self.state = "proceeding"
        self.start("timer_trying", now, self.timers.trying)
        self.start("timer_answer", now, 64 * self.timers.t1)

    def _send_trying(self, now: float, msg: Message | None, out: list[Action]) -> None:
        if self.last is None:
            self._send(now, self.request.create_response(100), out)
            self._extend_answer(now, msg, out)

    def _extend_answer(self, now: float, msg: Message | None, out: list[Action]) -> None:
        self.start("timer_answer", now, INVITE_ANSWER_AFTER_PROVISIONAL)

    def _send(self, now: float, msg: Message | None, out: list[Action]) -> None:
        self.deadlines.pop("timer_trying", None)
        super()._send(now, msg, out)

    def _start_g_h(self, now: float, msg: Message | None, out: list[Action]) -> None:
        # A challenge or refusal (401/403/407: mostly to sources that proved nothing) is sent once, not
        # at Timer G rates: a forged source must not make us a reflector. The client's retransmitted
        # INVITE still gets it again, one for one.
        quiet = self.last is not None and self.last[8:11] in QUIET_FINALS
        if not self.reliable and not quiet:
            self.interval = self.timers.t1
            self.start("timer_g", now, self.interval)
        # ... and its transaction waits for the ACK only T4, so a stream of them holds little memory
        # (a late ACK is then absorbed by the TU, a retransmitted INVITE challenged again).
        self.start("timer_h", now, self.timers.t4 if quiet else 64 * self.timers.t1)

    def _backoff_g(self, now: float, msg: Message | None, out: list[Action]) -> None:
        self.interval = min(2 * self.interval, self.timers.t2)
        self.start("timer_g", now, self.interval)

    def _start_i(self, now: float, msg: Message | None, out: list[Action]) -> None:
        self.start("timer_i", now, 0.0 if self.reliable else self.timers.t4)

    def _start_l(self, now: float, msg: Message | None, out: list[Action]) -> None:
        self.start("timer_l", now, 64 * self.timers.t1)


class NonInviteServer(Transaction):
    """RFC 3261 17.2.2."""

    __slots__ = ()

    TABLE: ClassVar[Table] = {
        ("trying", "tu_1xx"): ("proceeding", ("send",)),
        ("trying", "tu_final"): ("completed", ("stop", "send", "start_j", "forget")),
        ("trying", "timer_answer"): ("completed", ("answer_500", "start_j", "forget")),
        ("trying", "transport_error"): ("terminated", ("error",)),
        ("proceeding", "request"): ("proceeding", ("resend",)),
        ("proceeding", "tu_1xx"): ("proceeding", ("send",)),
        ("proceeding", "tu_final"): ("completed", ("stop", "send", "start_j", "forget")),
        ("proceeding", "timer_answer"): ("completed", ("answer_500", "start_j", "forget")),
        ("proceeding", "transport_error"): ("terminated", ("error",)),
        ("completed", "request"): ("completed", ("resend",)),
        ("completed", "timer_j"): ("terminated", ()),
    }

    def begin(self, now: float) -> None:
        self.state = "trying"
        self.start("timer_answer", now, 64 * self.timers.t1)

    def _start_j(self, now: float, msg: Message | None, out: list[Action]) -> None:
        self.start("timer_j", now, 0.0 if self.reliable else 64 * self.timers.t1)


class AnswerRetransmission(Transaction):
    """The UAS core's 2xx retransmission (RFC 3261 13.3.1.4) over an unreliable transport: T1
    doubling up to T2 until the ACK comes, for at most 64*T1, then `AckTimeout`."""

    __slots__ = ()

    TABLE: ClassVar[Table] = {
        ("waiting", "timer_g"): ("waiting", ("resend", "backoff_g")),
        ("waiting", "timer_h"): ("terminated", ("ack_timeout",)),
        ("waiting", "ack"): ("terminated", ()),
    }

    def begin(self, now: float) -> None:
        self.state = "waiting"
        self.interval = self.timers.t1
        self.start("timer_g", now, self.interval)
        self.start("timer_h", now, 64 * self.timers.t1)

    def _backoff_g(self, now: float, msg: Message | None, out: list[Action]) -> None:
        self.interval = min(2 * self.interval, self.timers.t2)
        self.start("timer_g", now, self.interval)

    def _ack_timeout(self, now: float, msg: Message | None, out: list[Action]) -> None:
        out.append(AckTimeout((self.key[1], self.key[2], self.key[3])))


class TuTimer(Transaction):
    """A timer of the transaction user (session refresh, ring timeout...), kept with the SIP timers
    so that one clock drives both."""

    __slots__ = ()

    TABLE: ClassVar[Table] = {("armed", "timer_tu"): ("terminated", ("fire",))}

    def _fire(self, now: float, msg: Message | None, out: list[Action]) -> None:
        out.append(TimerFired(self.key))


def answer_key(msg: Message) -> TxKey:
    """The 2xx retransmission an ACK ends: Call-ID, the UAS's (To) tag, the UAC's (From) tag, CSeq."""
    return ("2xx", msg.call_id, msg.to.tag or "", msg.from_.tag or "", str(msg.cseq.seq))


# -- request builders -------------------------------------------------------------------------------
def _start_from(method: str, invite: Request) -> Request:
    """ACK/CANCEL skeleton: same Request-URI, top Via and Route set as the INVITE."""
    req = Request(method, invite.uri)
    req.add("Via", str(invite.top_via))
    for route in invite.get_all("Route"):
        req.add("Route", route)
    req.add("Max-Forwards", "70")
    return req


def build_ack(invite: Request, response: Response) -> Request:
    """ACK for a non-2xx final response, inside the INVITE client transaction (17.1.1.3)."""
    ack = _start_from("ACK", invite)
    ack.add("From", invite.get("From"))
    ack.add("To", response.get("To"))
    ack.add("Call-ID", invite.call_id)
    ack.add("CSeq", f"{invite.cseq.seq} ACK")
    return ack


def build_cancel(invite: Request) -> Request:
    """CANCEL for a pending INVITE (RFC 3261 9.1): same Request-URI, Call-ID, To, From, CSeq number
    and top Via (so it reaches the same server transaction), and the same Route set."""
    cancel = _start_from("CANCEL", invite)
    for name in ("From", "To", "Call-ID"):
        cancel.add(name, invite.get(name))
    cancel.add("CSeq", f"{invite.cseq.seq} CANCEL")
    return cancel


# -- the layer ------------------------------------------------------------------------------------
def server_key(msg: Message, method: str) -> TxKey:
    """Server transaction id (17.2.3): branch + sent-by + method; ACK matches its INVITE.
    Without a magic-cookie branch, fall back to RFC 2543 style: Call-ID, From tag, CSeq, Via."""
    via = msg.top_via
    if via.rfc3261_branch:
        return ("3261", via.branch or "", via.sent_by, method)
    return ("2543", msg.call_id, msg.from_.tag or "", str(msg.cseq.seq), via.sent_by, method)


def client_key(msg: Message) -> TxKey:
    """Client transaction id (17.1.3): top Via branch + CSeq method."""
    return ("client", msg.top_via.branch or "", msg.cseq.method)


class TransactionLayer:
    """All transactions of one element. Not thread-safe; drive it from one event loop."""

    def __init__(self, timers: Timers | None = None, max_size: int = MAX_MESSAGE_SIZE) -> None:
        self.timers = timers or Timers()
        self.max_size = max_size
        self.transactions: dict[TxKey, Transaction] = {}
        self._heap: list[tuple[float, int, TxKey, str]] = []
        self._seq = itertools.count()
        self._started: list[tuple[float, TxKey, str]] = []  # deadlines transactions started since
        self._timer_ids = itertools.count()
        # The 2xx retransmissions of each dialog (Call-ID, To tag, From tag): `stop_answer` finds them
        # without a pass over every transaction (that pass cost 13% of the edge's CPU at 250 calls/s).
        self._answers: dict[tuple[str, ...], list[TxKey]] = {}

    def _schedule(self) -> None:
        """Queue the deadlines started since the last call (older entries of a timer that was stopped
        or restarted stay in the heap and are skipped when they come up)."""
        for at, key, name in self._started:
            heapq.heappush(self._heap, (at, next(self._seq), key, name))
        self._started.clear()

    def _run(self, tx: Transaction, event: str, now: float, msg: Message | None = None) -> list[Action]:
        out = tx.event(event, now, msg)
        if tx.state == "terminated":
            self.transactions.pop(tx.key, None)
            if tx.key[0] == "2xx":
                self._forget_answer(tx.key)
        if self._started:
            self._schedule()
        return out

    def next_deadline(self) -> float | None:
        heap = self._heap
        while heap:
            at, _, key, name = heap[0]
            tx = self.transactions.get(key)
            if tx is not None and tx.deadlines.get(name) == at:
                return at
            heapq.heappop(heap)  # stale entry
        return None

    def handle_timer(self, now: float) -> list[Action]:
        out: list[Action] = []
        while (at := self.next_deadline()) is not None and at <= now:
            _, _, key, name = heapq.heappop(self._heap)
            tx = self.transactions[key]
            del tx.deadlines[name]
            out += self._run(tx, name, now)
        return out

    # TU -> network
    def send_request(self, request: Request, addr: Addr, transport: str, now: float) -> list[Action]:
        """Start a client transaction. ACK is not a transaction: it is simply sent."""
        data = request.to_bytes()
        if request.method == "ACK":
            return [Send(data, addr, transport)]
        key = client_key(request)
        if key in self.transactions:
            raise LocalProtocolError("a client transaction with this branch exists")
        cls = InviteClient if request.method == "INVITE" else NonInviteClient
        tx = cls(key, request, addr, transport, self.timers, last=data, started=self._started)
        tx.begin(now)
        self.transactions[key] = tx
        self._schedule()
        return [Send(data, addr, transport)]

    def send_response(self, response: Response, now: float) -> list[Action]:
        """Send a TU response through its server transaction. A 2xx to an INVITE over an unreliable
        transport is retransmitted until its ACK (RFC 3261 13.3.1.4) or `AckTimeout`."""
        key = server_key(response, response.cseq.method)
        tx = self.transactions.get(key)
        if tx is None:
            raise LocalProtocolError("no server transaction for this response")
        invite = isinstance(tx, InviteServer)
        out = self._run(tx, "tu_" + _status_event(response.status, invite), now, response)
        if invite and 200 <= response.status < 300 and not tx.reliable:
            self._start_answer(response, tx.addr, tx.transport, now)
        return out

    def _start_answer(self, response: Response, addr: Addr, transport: str, now: float) -> None:
        key = answer_key(response)
        rtx = AnswerRetransmission(key, None, addr, transport, self.timers, last=response.to_bytes(),
                                   started=self._started)  # fmt: skip
        rtx.begin(now)
        if key not in self.transactions:
            self._answers.setdefault(key[1:4], []).append(key)
        self.transactions[key] = rtx
        self._schedule()

    def _forget_answer(self, key: TxKey) -> None:
        keys = self._answers.get(key[1:4])
        if keys is not None and key in keys:
            keys.remove(key)
            if not keys:
                del self._answers[key[1:4]]

    def stop_answer(self, dialog: tuple[str, str, str]) -> None:
        """Stop retransmitting the 2xx of a dialog that ended before its ACK came."""
        for key in self._answers.pop(dialog, ()):
            self.transactions.pop(key, None)

    # TU timers
    def set_timer(self, delay: float, now: float) -> TxKey:
        """A timer that comes back as `TimerFired(key)` from `handle_timer` once `delay` is over."""
        key = ("tu", str(next(self._timer_ids)))
        timer = TuTimer(key, None, ("", 0), "", self.timers, state="armed", started=self._started)
        timer.start("timer_tu", now, max(0.0, delay))
        self.transactions[key] = timer
        self._schedule()
        return key

    def forget_client(self, key: TxKey) -> None:
        """Drop a client transaction without a word on the wire (an INVITE nobody answered)."""
        if key[0] == "client":
            self.transactions.pop(key, None)

    def forget_server(self, key: TxKey) -> None:
        """Drop a server transaction unanswered (the TU decided not to answer its source)."""
        if key[0] in ("3261", "2543"):
            self.transactions.pop(key, None)

    def cancel_timer(self, key: TxKey) -> None:
        if key[0] == "tu":
            self.transactions.pop(key, None)

    def transport_error(self, key: TxKey, now: float) -> list[Action]:
        tx = self.transactions.get(key)
        return [] if tx is None else self._run(tx, "transport_error", now)

    # network -> TU
    def receive_data(self, data: bytes, addr: Addr, transport: str, now: float) -> list[Action]:
        """A datagram (or a framed stream message's bytes) from `addr`: parsed, then `receive_message`.
        A request the parser refuses gets its error's status (`refusal_for`) when the headers to echo
        are readable; anything else that does not parse is dropped."""
        try:
            msg = parse_message(data, max_size=self.max_size)
        except SipParseError as err:
            answer = refusal_for(data, err)
            what = "refusing" if answer else "dropping"
            peer_log.info("%s message from %s/%s: %s", what, addr, transport, err)
            return [Send(answer, addr, transport)] if answer else []
        return self.receive_message(msg, addr, transport, now)

    def receive_message(self, msg: Message, addr: Addr, transport: str, now: float) -> list[Action]:
        """A parsed message from `addr`: a request's top Via is stamped with where it really came from,
        the message validated; a request that fails is answered with its error's status (no
        transaction, no TU), anything else that fails is dropped."""
        try:
            if isinstance(msg, Request):
                stamp_via(msg, addr)
            msg.validate()
        except SipParseError as err:
            peer_log.info("rejecting message from %s/%s: %s", addr, transport, err)
            if not isinstance(msg, Request) or msg.method == "ACK":
                return []
            try:
                answer = msg.create_response(err.status, err.reason).to_bytes()
            except SipParseError:
                return []  # not even enough of a request to answer
            return [Send(answer, addr, transport)]
        return self.receive(msg, addr, transport, now)

    def receive(self, msg: Message, addr: Addr, transport: str, now: float) -> list[Action]:
        """Feed a validated message; returns what to send and what to deliver to the TU."""
        if isinstance(msg, Response):
            tx = self.transactions.get(client_key(msg))
            if tx is None:
                return [Deliver(msg, addr, transport, None)]  # e.g. 2xx retransmission: the TU's job
            return self._run(tx, _status_event(msg.status, isinstance(tx, InviteClient)), now, msg)
        assert isinstance(msg, Request)
        if msg.method == "ACK":
            answer = self.transactions.get(answer_key(msg))
            if answer is not None:
                self._run(answer, "ack", now, msg)
            tx = self.transactions.get(server_key(msg, "INVITE"))
            if tx is None:
                return [Deliver(msg, addr, transport, None)]  # ACK of a 2xx: end to end
            return self._run(tx, "ack", now, msg)
        key = server_key(msg, msg.method)
        tx = self.transactions.get(key)
        if tx is not None:
            return self._run(tx, "request", now, msg)
        cls = InviteServer if msg.method == "INVITE" else NonInviteServer
        destination = response_destination(msg.top_via, addr, transport)
        tx = cls(key, msg, destination, transport, self.timers, started=self._started)
        tx.begin(now)
        self.transactions[key] = tx
        out: list[Action] = [Deliver(msg, addr, transport, key)]
        if isinstance(tx, InviteServer) and self.timers.trying <= 0:
            out += tx.event("timer_trying", now)
        self._schedule()
        return out

    def invite_for_cancel(self, cancel: Request) -> TxKey | None:
        """The INVITE server transaction a CANCEL refers to (RFC 3261 9.2), if still alive."""
        key = server_key(cancel, "INVITE")
        tx = self.transactions.get(key)
        if not isinstance(tx, InviteServer) or tx.state != "proceeding":
            return None
        # Without a branch the Request-URI is part of the match (17.2.3), compared per 19.1.4.
        if key[0] == "2543" and not uri_equal(cancel.uri, tx.request.uri):
            return None
        return key


def _resolve(cls: type[Transaction]) -> dict[tuple[str, str], tuple[str, tuple[Step, ...]]]:
    return {
        event: (state, tuple(getattr(cls, "_" + step) for step in steps))
        for event, (state, steps) in cls.TABLE.items()
    }


# Each table's step names resolved to functions once per class rather than per event. (A table, not
# a class attribute set by `__init_subclass__`: the compiled form's classes take no new attributes.)
_STEPS: dict[type, dict[tuple[str, str], tuple[str, tuple[Step, ...]]]] = {
    cls: _resolve(cls) for cls in Transaction.__subclasses__()
}
