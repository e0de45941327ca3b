"""The carrier REGISTER state machine: challenge, expiry, refresh, back-off, continuity (pure)."""

from __future__ import annotations

import dataclasses

from trunkline.core.models import DigestAlgorithm
from trunkline.edge.carrier_registration import (
    BACKOFF_MAX,
    CarrierRegistration,
    Progress,
    RegistrationPlan,
    Step,
)
from trunkline.edge.digest import DigestAuthenticator, parse_credentials
from trunkline.sip.message import Request, Response
from trunkline.sip.uri import SipUri, parse_uri

CONTACT = SipUri("sip", "", "acme", None, "127.0.0.9", 5070, {})


def plan(*registrars: str, expires: int = 600, username: str | None = "acme") -> RegistrationPlan:
    uris = tuple(
        u for u in (parse_uri(r) for r in registrars or ("sip:127.0.0.1:5999",)) if isinstance(u, SipUri)
    )
    return RegistrationPlan(uris, "acme", CONTACT, expires, username, "s3cret" if username else None)


def sent(step: Step) -> Request:
    assert step.request is not None
    step.request.add("Via", "SIP/2.0/UDP 127.0.0.9:5071;branch=z9hG4bK-test", first=True)
    return step.request


def answer(request: Request, status: int, *headers: tuple[str, str]) -> Response:
    response = request.create_response(status, to_tag="t")
    for name, value in headers:
        response.add(name, value)
    return response


def test_a_challenged_register_is_answered_and_the_granted_expiry_honoured() -> None:
    machine = CarrierRegistration(plan())
    first = sent(machine.handle_timer(100.0))
    assert first.method == "REGISTER" and str(first.uri) == "sip:127.0.0.1:5999"
    assert first.get("Expires") == "600" and first.contact[0].uri == CONTACT
    assert str(first.to.uri) == "sip:acme@127.0.0.1" and first.from_.tag
    server = DigestAuthenticator(b"k", clock=lambda: 100.0)
    challenge = server.challenges("carrier", [DigestAlgorithm.SHA256])[0]
    second = sent(machine.receive(answer(first, 401, ("WWW-Authenticate", challenge)), 100.1))
    assert (second.call_id, second.cseq.seq) == (first.call_id, first.cseq.seq + 1)
    params = parse_credentials(second.get("Authorization") or "")
    verdict = server.verify(params, "REGISTER", str(second.uri), "carrier", [DigestAlgorithm.SHA256],
                            lambda user: "s3cret" if user == "acme" else None)  # fmt: skip
    assert verdict.ok, verdict
    done = machine.receive(answer(second, 200, ("Contact", f"<{CONTACT}>;expires=120")), 100.2)
    assert done.request is None
    assert machine.progress.registered(220.1) and not machine.progress.registered(220.3)
    assert done.wake_at == 100.2 + 60  # a short lifetime is refreshed halfway
    assert machine.handle_timer(150.0).request is None  # not due yet
    refresh = sent(machine.handle_timer(160.2))
    assert (refresh.call_id, refresh.cseq.seq) == (first.call_id, second.cseq.seq + 1)
    long_one = machine.receive(answer(refresh, 200, ("Expires", "3600")), 161.0)
    assert long_one.wake_at == 161.0 + 600 - 60  # ours (600) is the lower; refreshed a minute early


def test_a_new_holder_continues_the_binding_from_the_store() -> None:
    machine = CarrierRegistration(plan())
    request = sent(machine.handle_timer(0.0))
    machine.receive(answer(request, 200), 0.5)
    stored = machine.progress.to_state()
    taken_over = CarrierRegistration(plan(), Progress.from_state(stored))
    again = sent(taken_over.handle_timer(1.0))
    assert (again.call_id, again.cseq.seq) == (request.call_id, request.cseq.seq + 1)
    assert Progress.from_state({"cseq": "x", "call_id": "c"}) == Progress()
    assert Progress.from_state({"call_id": 5, "cseq": 1}).call_id == ""  # hostile state: start afresh
    assert Progress.from_state({**stored, "registrar": "sip:x"}) == Progress()
    assert Progress.from_state({**stored, "registered_until": 5, "holder": "edge-a"}).registered_until == 5.0


def test_failures_back_off_exponentially_bounded_and_move_to_the_next_registrar() -> None:
    machine = CarrierRegistration(plan("sip:127.0.0.1:5001", "sip:127.0.0.1:5002"))
    now, waits, targets = 0.0, [], []
    for _ in range(12):
        step = machine.handle_timer(now)
        targets.append(step.target and step.target.port)
        request = sent(step)
        step = machine.receive(answer(request, 503), now) if len(waits) % 2 else machine.no_answer(now)
        waits.append(step.wake_at - now)
        now = step.wake_at
    assert waits[:4] == [2.0, 4.0, 8.0, 16.0] and max(waits) == BACKOFF_MAX
    assert targets[:4] == [5001, 5002, 5001, 5002]
    assert machine.progress.failures == 12 and machine.progress.status == 503
    assert not machine.progress.registered(now)
    step = machine.handle_timer(now)
    machine.receive(answer(sent(step), 200), now)
    assert machine.progress.failures == 0 and machine.progress.registered(now + 1)


def test_a_challenge_without_credentials_or_a_repeated_one_fails() -> None:
    server = DigestAuthenticator(b"k", clock=lambda: 0.0)
    challenge = ("WWW-Authenticate", server.challenges("carrier", [DigestAlgorithm.MD5])[0])
    anonymous = CarrierRegistration(plan(username=None))
    step = anonymous.receive(answer(sent(anonymous.handle_timer(0.0)), 401, challenge), 0.0)
    assert step.request is None and anonymous.progress.status == 401
    machine = CarrierRegistration(plan())
    request = sent(machine.handle_timer(0.0))
    proxy = server.challenges("carrier", [DigestAlgorithm.MD5])[0]
    request = sent(machine.receive(answer(request, 407, ("Proxy-Authenticate", proxy)), 0.0))
    assert request.get("Proxy-Authorization")
    stale = server.challenges("carrier", [DigestAlgorithm.MD5], stale=True)[0]
    request = sent(machine.receive(answer(request, 401, ("WWW-Authenticate", stale)), 0.0))
    assert request.get("Authorization")  # a stale nonce is answered once more
    step = machine.receive(answer(request, 401, challenge), 0.0)
    assert step.request is None and machine.progress.failures == 1  # then the credentials are refused
    again = sent(machine.handle_timer(machine.wake_at))  # the next attempt answers afresh
    assert sent(machine.receive(answer(again, 401, challenge), machine.wake_at)).get("Authorization")


def test_a_challenge_for_another_realm_than_the_carriers_is_not_answered() -> None:
    server = DigestAuthenticator(b"k", clock=lambda: 0.0)
    machine = CarrierRegistration(dataclasses.replace(plan(), realm="carrier.example"))
    challenge = ("WWW-Authenticate", server.challenges("elsewhere", [DigestAlgorithm.SHA256])[0])
    step = machine.receive(answer(sent(machine.handle_timer(0.0)), 401, challenge), 0.0)
    assert step.request is None and machine.progress.status == 401


def test_interval_too_brief_takes_the_registrars_minimum() -> None:
    machine = CarrierRegistration(plan(expires=60))
    request = sent(machine.handle_timer(0.0))
    retry = sent(machine.receive(answer(request, 423, ("Min-Expires", "300")), 0.0))
    assert retry.get("Expires") == "300" and machine.given.expires == 60


def test_a_200_that_does_not_bind_our_contact_is_a_failure_and_stray_answers_are_ignored() -> None:
    machine = CarrierRegistration(plan())
    request = sent(machine.handle_timer(0.0))
    other = answer(request, 200, ("Contact", "<sip:someone@192.0.2.1>;expires=600"))
    assert machine.receive(other, 0.0).request is None and machine.progress.status == 200
    assert not machine.progress.registered(1.0) and machine.progress.failures == 1
    assert machine.receive(answer(request, 200), 0.0).request is None  # no REGISTER pending: ignored
    assert not machine.progress.registered(1.0)


def test_an_unreadable_contact_in_the_200_is_a_failure_not_a_crash() -> None:
    machine = CarrierRegistration(plan())
    request = sent(machine.handle_timer(0.0))
    step = machine.receive(answer(request, 200, ("Contact", "<sip:broken")), 0.0)
    assert step.request is None and machine.progress.failures == 1
    assert machine.progress.reason.startswith("unreadable Contact")


def test_unregistering_sends_expires_zero_and_answers_a_challenge() -> None:
    machine = CarrierRegistration(plan())
    registered = sent(machine.handle_timer(0.0))
    machine.receive(answer(registered, 200), 0.0)
    bye = sent(machine.unregister())
    assert bye.get("Expires") == "0" and bye.call_id == registered.call_id and bye.cseq.seq == 2
    server = DigestAuthenticator(b"k", clock=lambda: 0.0)
    challenge = ("WWW-Authenticate", server.challenges("carrier", [DigestAlgorithm.MD5])[0])
    again = sent(machine.receive(answer(bye, 401, challenge), 1.0))
    assert again.get("Expires") == "0" and again.get("Authorization")
    assert machine.receive(answer(again, 200), 1.0).request is None
    assert not machine.progress.registered(1.0) and machine.progress.failures == 0
