"""Registering to a carrier (Carrier `spec.registration`): the REGISTER state machine, sans I/O.

`CarrierRegistration` is given times and responses and answers with the request to send (if any) and
when to wake it next; the driver (edge/upkeep.py) sends, waits and keeps the lease. Its `Progress`
(Call-ID, CSeq, how long the carrier keeps us, failures) lives in the shared store, so the edge that
takes the registration over continues the same binding (RFC 3261 10.2.4: same Call-ID, CSeq up).

Refresh: halfway through a short lifetime, a minute before a long one ends. Failures (a non-2xx, no
answer, a second challenge) move on to the next registrar and back off exponentially, bounded.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from trunkline.core.models import Carrier
from trunkline.edge.digest_client import ChallengeError, DigestClient, Tries
from trunkline.edge.directory import Directory
from trunkline.sip.errors import SipParseError
from trunkline.sip.headers import NameAddr
from trunkline.sip.ids import new_call_id, new_tag
from trunkline.sip.message import Request, Response
from trunkline.sip.uri import SipUri, parse_uri

BACKOFF_FIRST = 2.0  # seconds after the first failure; doubled per failure in a row
BACKOFF_MAX = 300.0
REFRESH_MARGIN = 60.0  # a long registration is refreshed this long before it ends
MAX_INTERVAL_RETRIES = 2  # REGISTERs sent again with a registrar's Min-Expires (423) per attempt


@dataclass(frozen=True)
class RegistrationPlan:
    """What to register, from the Carrier and this installation's address."""

    registrars: tuple[SipUri, ...]  # tried in order (the spec's registrar, else the gateways)
    user: str
    contact: SipUri  # the edges' Service address: any edge takes the calls sent there
    expires: int
    username: str | None = None  # credentials for 401/407; None: a challenge is a failure
    password: str | None = None
    realm: str | None = None  # the Carrier's `spec.auth.realm`: a challenge for another is a failure

    def aor(self, registrar: SipUri) -> SipUri:
        return SipUri(registrar.scheme, "", self.user, None, registrar.host, None, {})


def plan_for(
    carrier: Carrier, directory: Directory, contact_host: str, contact_port: int
) -> RegistrationPlan | None:
    """The Carrier's registration with the edges' Contact address; None when it cannot be done (no
    user nor credentials, or no SIP URI to register at)."""
    spec = carrier.spec.registration
    username, password = directory.carrier_credentials(carrier) or (None, None)
    user = directory.registration_user(carrier)
    registrars = [spec.registrar] if spec.registrar else [g.uri for g in carrier.spec.gateways]
    uris = tuple(u for u in (parse_uri(r) for r in registrars) if isinstance(u, SipUri))
    if not user or not uris:
        return None
    contact = SipUri("sip", "", user, None, contact_host, contact_port, {})
    realm = carrier.spec.auth.realm if carrier.spec.auth else None
    return RegistrationPlan(uris, user, contact, spec.expires, username, password, realm)


@dataclass
class Progress:
    """The registration as every edge sees it in the store."""

    call_id: str = ""
    cseq: int = 0
    registered_until: float = 0.0  # the carrier keeps our binding until then (0: not registered)
    failures: int = 0  # in a row
    registrar: int = 0  # index in the plan's registrars
    status: int = 0  # the last final status (0: none, 408: no answer)
    reason: str = ""

    def registered(self, now: float) -> bool:
        return self.registered_until > now

    def to_state(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_state(cls, state: dict[str, Any] | None) -> Progress:
        """The stored progress; fields of the wrong type (another version, a bad write) start afresh."""
        if not state:
            return cls()
        progress = cls()
        for name, default in dataclasses.asdict(progress).items():
            value = state.get(name, default)
            if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            if type(value) is not type(default):
                return cls()
            setattr(progress, name, value)
        return progress


@dataclass(frozen=True)
class Step:
    """What the driver does next: send `request` to `target` (then feed its answer back), and wake
    the machine at `wake_at` (store clock seconds)."""

    request: Request | None
    target: SipUri | None
    wake_at: float


class CarrierRegistration:
    def __init__(self, plan: RegistrationPlan, progress: Progress | None = None) -> None:
        self.plan = self.given = plan  # `plan` may take a registrar's Min-Expires; `given` stays
        self.progress = progress or Progress()
        if not self.progress.call_id:
            self.progress.call_id = new_call_id()
        self.progress.registrar %= max(1, len(plan.registrars))
        self.wake_at = 0.0
        self._pending: Request | None = None
        self._retries = 0  # after a 423, this attempt
        self._tries = Tries()  # challenges answered, this attempt: once, and once more when stale
        # Our credentials and the registrar's last challenge (nonce counts go on across refreshes).
        self._client = (
            DigestClient(plan.username, plan.password, plan.realm)
            if plan.username and plan.password
            else None
        )

    @property
    def registrar(self) -> SipUri:
        return self.plan.registrars[self.progress.registrar]

    def handle_timer(self, now: float) -> Step:
        """Time passed: register (or refresh) when due."""
        if self._pending is not None or now < self.wake_at:
            return Step(None, None, self.wake_at)
        self._retries, self._tries = 0, Tries()
        return self._send(None)

    def receive(self, response: Response, now: float) -> Step:
        """The final response to the REGISTER we sent."""
        sent, self._pending = self._pending, None
        if sent is None or response.cseq.seq != sent.cseq.seq or response.call_id != sent.call_id:
            return Step(None, None, self.wake_at)
        if response.status in (401, 407):
            credentials = self._answer(response, str(sent.uri))
            if credentials is not None:
                return self._send(credentials)
        if response.status == 423 and self._retries < MAX_INTERVAL_RETRIES:
            minimum = _seconds(response.get("Min-Expires"))
            if minimum is not None and self.plan.expires < minimum <= 86400:
                self.plan = dataclasses.replace(self.plan, expires=minimum)
                self._retries += 1
                return self._send(None)
        if 200 <= response.status < 300 and self.plan.expires == 0:  # unregistered
            self.progress.registered_until, self.progress.status = 0.0, response.status
            return Step(None, None, self.wake_at)
        if 200 <= response.status < 300:
            try:
                granted = self._granted(response)
            except SipParseError as exc:  # the registrar's mistake: a failure like any other
                return self._failed(now, response.status, f"unreadable Contact: {exc}")
            if granted is not None and granted > 0:
                self.progress.registered_until = now + granted
                self.progress.failures, self.progress.status, self.progress.reason = 0, response.status, ""
                refresh = granted / 2 if granted < 2 * REFRESH_MARGIN else granted - REFRESH_MARGIN
                self.wake_at = now + refresh
                return Step(None, None, self.wake_at)
            return self._failed(now, response.status, "the 200 does not bind our Contact")
        return self._failed(now, response.status, response.reason)

    def no_answer(self, now: float) -> Step:
        """The REGISTER got no final response in time (or could not be sent)."""
        if self._pending is None:
            return Step(None, None, self.wake_at)
        self._pending = None
        return self._failed(now, 408, "no answer")

    def unregister(self) -> Step:
        """A REGISTER that removes our binding (Expires: 0): registration was turned off."""
        self._retries, self._tries, self._pending = 0, Tries(), None
        self.plan = dataclasses.replace(self.plan, expires=0)
        return self._send(None)

    # -- internals ----------------------------------------------------------------------------------
    def _send(self, credentials: tuple[str, str] | None) -> Step:
        plan, registrar = self.plan, self.registrar
        self.progress.cseq += 1
        uri = SipUri(registrar.scheme, "", None, None, registrar.host, registrar.port, dict(registrar.params))
        aor = plan.aor(registrar)
        request = Request("REGISTER", uri)
        request.add("Max-Forwards", "70")
        request.add("From", str(NameAddr(aor, None, {"tag": new_tag()})))
        request.add("To", str(NameAddr(aor)))
        request.add("Call-ID", self.progress.call_id)
        request.add("CSeq", f"{self.progress.cseq} REGISTER")
        request.add("Contact", str(NameAddr(plan.contact)))
        request.add("Expires", str(plan.expires))
        if credentials is not None:
            request.add(*credentials)
        self._pending = request
        return Step(request, registrar, self.wake_at)

    def _answer(self, response: Response, uri: str) -> tuple[str, str] | None:
        """The credentials answering a 401/407, or None: no credentials, a challenge we do not
        answer (edge/digest_client.py), or one more than once per attempt (twice when stale)."""
        if self._client is None:
            return None
        try:
            challenge = self._client.challenge_of(response)
        except ChallengeError:
            return None
        if not self._tries.may_answer(challenge):
            return None
        return (challenge.answer_header, self._client.authorization(challenge, "REGISTER", uri))

    def _granted(self, response: Response) -> int | None:
        """Seconds the registrar keeps our binding: our Contact's expires, else Expires, else ours;
        never more than we asked for."""
        header = _seconds(response.get("Expires"))
        for contact in response.contact:
            uri = contact.uri
            if isinstance(uri, SipUri) and _same_contact(uri, self.plan.contact):
                mine = _seconds(contact.params.get("expires"))
                seconds = mine if mine is not None else header
                return min(self.plan.expires, seconds if seconds is not None else self.plan.expires)
        if response.contact:
            return None  # the registrar lists bindings, and ours is not among them
        return min(self.plan.expires, header if header is not None else self.plan.expires)

    def _failed(self, now: float, status: int, reason: str) -> Step:
        progress = self.progress
        progress.failures += 1
        progress.status, progress.reason = status, reason[:200]
        progress.registrar = (progress.registrar + 1) % len(self.plan.registrars)
        self.wake_at = now + min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** min(progress.failures - 1, 16))
        return Step(None, None, self.wake_at)


def _seconds(text: str | None) -> int | None:
    if text is None or not text.strip().isdigit() or len(text.strip()) > 10:
        return None
    return int(text.strip())


def _same_contact(a: SipUri, b: SipUri) -> bool:
    return (
        (a.user or "") == (b.user or "")
        and a.host.lower() == b.host.lower()
        and (a.port or 5060) == (b.port or 5060)
    )
