"""Emergency calls through real processes (`trunkline up` / `trunkline edge`, SIPp PBX and carriers,
Redis): a PBX dialling 911 (or the trunk's own 9911) gets through with the trunk's channels full,
with allowedPrefixes that exclude the number, with a caller ID the policy refuses, while the edge
drains and while Redis is dead or stalled; the carrier gets the number as dialled. Normal calls in
the same situations are still refused, and the CDR, log and metrics flag the emergency calls."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis as redis_client

from tests.support import sipp
from tests.support.ports import free_port
from tests.support.redis_server import RedisProcess
from tests.support.sipp import SCENARIOS
from tests.support.trunkline_up import Up, manifests

NOT_A_DID = "+14155559999"  # the trunk's caller-ID policy (dids-only, reject) refuses it


def answering(workdir: Path, port: int) -> subprocess.Popen[str]:
    """A carrier UAS that checks each INVITE's Request-URI is an emergency number as dialled: any
    other (a normalised +911..., a normal number) is written in its error log (`misdialled`)."""
    text = (SCENARIOS / "carrier_uas.xml").read_text()
    checked = (
        '<recv request="INVITE" crlf="true"><action>'
        '<ereg regexp="^INVITE sip:(911|9911)@" search_in="msg" check_it="true" assign_to="dialled"/>'
        '</action></recv><Reference variables="dialled"/>'
    )
    text = text.replace('<recv request="INVITE" crlf="true"/>', checked)
    scenario = sipp.write_scenario(workdir, "emergency_uas.xml", text)
    return sipp.uas(workdir, "127.0.0.1", port, scenario=str(scenario))


def misdialled(workdir: Path) -> str:
    """What `answering` in `workdir` found not dialled as it should be ('' when every INVITE was)."""
    errors = "".join(p.read_text(errors="replace") for p in workdir.glob("*_errors.log"))
    return errors if "Failed regexp match" in errors else ""


def trunk_manifests(carrier_port: int, psap_port: int | None) -> str:
    """Trunk `acme` with one channel, only +44 allowed, 9911 as its own emergency number; the
    default-route carrier `pstn`, and with `psap_port` a carrier marked for emergency calls."""
    text = manifests(carrier_port, free_port(), channels=1, outbound={"allowedPrefixes": ["+44"]},
                     emergency={"numbers": ["9911"]})  # fmt: skip
    if psap_port is None:
        return text
    psap = {"apiVersion": "trunkline.io/v1alpha1", "kind": "Carrier", "metadata": {"name": "psap"},
            "spec": {"gateways": [{"uri": f"sip:127.0.0.1:{psap_port}"}], "prefixes": ["+999"],
                     "emergency": True}}  # fmt: skip
    return text + "\n---\n" + json.dumps(psap)


def held_call(tmp_path: Path, up: Up, hold_ms: int) -> sipp.Background:
    """A normal call that holds the trunk's one channel."""
    held = sipp.Background(
        lambda: sipp.uac(tmp_path / "held", up.sip, "127.0.0.2", "+442071234567", hold_ms=hold_ms)
    )
    up.wait_busy(1)
    return held


def emergency_cdrs(up: Up, count: int, timeout: float) -> list[dict[str, object]]:
    """The records flagged emergency, once `count` of them are written (or the timeout passed)."""
    deadline = time.monotonic() + timeout
    while True:
        found = sorted((r for r in up.cdrs() if r["emergency"]), key=lambda r: str(r["callee"]))
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def test_past_channels_prefixes_and_caller_id_to_the_emergency_carrier(
    tmp_path: Path, carrier_port: int
) -> None:
    psap_port = free_port()
    pstn = sipp.uas(tmp_path / "pstn", "127.0.0.1", carrier_port)
    psap = answering(tmp_path / "psap", psap_port)
    up = Up(tmp_path / "up", trunk_manifests(carrier_port, psap_port)).start()
    try:
        held = held_call(tmp_path, up, hold_ms=20000)  # long enough for what follows on a slow machine
        # 911 (the installation's, NANP) and 9911 (the trunk's own) with the only channel taken, a
        # number outside allowedPrefixes and (911) a caller ID the policy refuses.
        full = sipp.uac_expect(tmp_path / "full", up.sip, "127.0.0.2", "+442071234568", 503)
        e911 = sipp.uac(tmp_path / "911", up.sip, "127.0.0.2", "911", caller=NOT_A_DID)
        e9911 = sipp.uac(tmp_path / "9911", up.sip, "127.0.0.2", "9911")
        # The same policies refuse normal calls as before.
        outside = sipp.uac_expect(tmp_path / "outside", up.sip, "127.0.0.2", "+15551230000", 403)
        bad_caller = sipp.uac_expect(tmp_path / "caller", up.sip, "127.0.0.2", "+442071234569", 403,
                                     caller=NOT_A_DID)  # fmt: skip
        normal = held.result(timeout=60)
        cdrs = emergency_cdrs(up, 2, timeout=30)
        held_cdr = [c for c in up.wait_cdrs(3) if not c["emergency"]]
        metrics = up.metrics()
    finally:
        psap_out = sipp.stop(psap)
        pstn_out = sipp.stop(pstn)
        up.stop()
    log = up.output()
    assert full.ok and outside.ok and bad_caller.ok, full.output + outside.output + bad_caller.output + log
    for rule in ("rule=channels", "rule=allowedPrefixes", "rule=callerId"):
        assert rule in log, log
    assert e911.ok, e911.output + psap_out + log
    assert e9911.ok, e9911.output + psap_out + log
    assert normal.ok, normal.output + log
    assert sipp.received(psap_out, "INVITE") == 2, psap_out  # both, as dialled, to the emergency carrier
    assert misdialled(tmp_path / "psap") == ""
    assert sipp.received(pstn_out, "INVITE") == 1, pstn_out  # only the held normal call
    # The channel was taken all along: the held call ended after both emergency calls began.
    assert len(held_cdr) == 1 and all(str(held_cdr[0]["end"]) > str(c["setup"]) for c in cdrs), held_cdr
    assert [(c["callee"], c["caller"], c["status"]) for c in cdrs] == [
        ("911", NOT_A_DID, 200), ("9911", "+14155550100", 200)
    ], cdrs  # fmt: skip
    assert 'trunkline_emergency_calls_total{outcome="answered",trunk="acme"} 2.0' in metrics, metrics
    assert "emergency call" in log and "number=911" in log, log


@pytest.mark.parametrize("psap_fails", ["503", "403", "not running"])
def test_the_normal_route_when_every_emergency_carrier_fails(
    psap_fails: str, tmp_path: Path, carrier_port: int
) -> None:
    psap_port = free_port()
    pstn = answering(tmp_path / "pstn", carrier_port)  # the default route, asked for 911 as dialled
    psap = None
    if psap_fails != "not running":  # else nothing listens there: no answer at all
        psap = sipp.uas_status(tmp_path / "psap", "127.0.0.1", psap_port, int(psap_fails), "Refused")
    up = Up(tmp_path / "up", trunk_manifests(carrier_port, psap_port)).start()
    try:
        e911 = sipp.uac(tmp_path / "911", up.sip, "127.0.0.2", "911")  # outside allowedPrefixes
        [cdr] = emergency_cdrs(up, 1, timeout=30)
    finally:
        psap_out = sipp.stop(psap) if psap is not None else ""
        pstn_out = sipp.stop(pstn)
        up.stop()
    log = up.output()
    assert e911.ok, e911.output + psap_out + pstn_out + log
    if psap is not None:
        assert sipp.received(psap_out, "INVITE") == 1, psap_out
    assert sipp.received(pstn_out, "INVITE") == 1, pstn_out
    assert misdialled(tmp_path / "pstn") == ""
    assert (cdr["callee"], cdr["status"], cdr["emergency"]) == ("911", 200, True), cdr
    attempts = cdr["attempts"]
    assert isinstance(attempts, list), cdr
    expected_psap = None if psap is None else int(psap_fails)
    assert [(a["target"], a["status"]) for a in attempts] == [
        (f"sip:127.0.0.1:{psap_port}", expected_psap), (f"sip:127.0.0.1:{carrier_port}", 200)
    ], cdr  # fmt: skip


def test_while_the_edge_drains(tmp_path: Path, carrier_port: int) -> None:
    psap_port = free_port()
    pstn = sipp.uas(tmp_path / "pstn", "127.0.0.1", carrier_port)
    psap = answering(tmp_path / "psap", psap_port)
    up = Up(tmp_path / "up", trunk_manifests(carrier_port, psap_port), ["--grace", "60"]).start()
    assert up.proc is not None
    try:
        held = held_call(tmp_path, up, hold_ms=20000)  # keeps the draining process up
        up.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 20
        while "signal received" not in up.output():
            assert time.monotonic() < deadline, up.output()
            time.sleep(0.1)
        refused = sipp.uac_expect(tmp_path / "refused", up.sip, "127.0.0.2", "+442071234568", 503)
        e911 = sipp.uac(tmp_path / "911", up.sip, "127.0.0.2", "911")
        normal = held.result(timeout=60)
        code = up.proc.wait(timeout=60)  # the drain ends once both calls are over
        drained = up.cdrs()
    finally:
        psap_out = sipp.stop(psap)
        sipp.stop(pstn)
        up.stop()
    log = up.output()
    assert refused.ok, refused.output + log
    assert e911.ok, e911.output + psap_out + log
    assert misdialled(tmp_path / "psap") == ""
    assert normal.ok, normal.output + log
    assert code == 0, log
    emergency_cdr = [c for c in drained if c["emergency"]]
    held_cdr = [c for c in drained if not c["emergency"]]
    assert [(c["callee"], c["status"]) for c in emergency_cdr] == [("911", 200)], drained
    assert len(held_cdr) == 1 and str(held_cdr[0]["end"]) > str(emergency_cdr[0]["setup"]), drained


@pytest.fixture
def edge(tmp_path: Path, redis: RedisProcess, carrier_port: int) -> Iterator[Up]:
    """An edge on Redis, without an emergency carrier: emergency calls take the default route."""
    up = Up(tmp_path / "edge", trunk_manifests(carrier_port, None), ["--redis", redis.url], command="edge")
    yield up.start()
    up.stop()


@pytest.mark.parametrize("trouble", ["dead", "stalled"])
def test_while_redis_is_down(
    trouble: str, edge: Up, redis: RedisProcess, tmp_path: Path, carrier_port: int
) -> None:
    pstn = answering(tmp_path / "pstn", carrier_port)  # the default route, asked for 911 as dialled
    assert redis.proc is not None
    try:
        if trouble == "dead":
            redis.stop(kill=True)
        else:
            redis.proc.send_signal(signal.SIGSTOP)  # connections stay open, nothing answers
        refused = sipp.uac_expect(tmp_path / "refused", edge.sip, "127.0.0.2", "+442071234567", 503)
        by_acl = sipp.uac(tmp_path / "acl", edge.sip, "127.0.0.2", "911")
        # A digest trunk's PBX authenticates as ever (an unauthenticated stranger gets nothing).
        by_digest = sipp.uac(
            tmp_path / "digest", edge.sip, "127.0.0.3", "911", "-au", "acme", "-ap", "s3cret-acme"
        )
        stranger = sipp.uac_expect(tmp_path / "stranger", edge.sip, "127.0.0.3", "911", 407)
        if trouble == "dead":
            redis.start()  # the same port, empty
        else:
            redis.proc.send_signal(signal.SIGCONT)
        # The ends were kept and retried: their CDRs arrive once the store answers again.
        cdrs = emergency_cdrs(edge, 2, timeout=90)
    finally:
        if trouble == "stalled" and redis.proc.poll() is None:
            redis.proc.send_signal(signal.SIGCONT)
        pstn_out = sipp.stop(pstn)
    log = edge.output()
    assert refused.ok, refused.output + log
    assert "rule=store" in log, log
    assert by_acl.ok, by_acl.output + pstn_out + log
    assert by_digest.ok, by_digest.output + pstn_out + log
    assert stranger.ok, stranger.output + log
    assert sipp.received(pstn_out, "INVITE") == 2, pstn_out
    assert misdialled(tmp_path / "pstn") == ""
    assert [(c["callee"], c["status"], c["hung_up"]) for c in cdrs] == [("911", 200, "caller")] * 2, log
    assert "emergency call admitted without the store" in log, log
    assert edge.proc is not None and edge.proc.poll() is None


def stored_dialogs(url: str, timeout: float) -> int:
    """How many dialog keys (each leg's, of live calls) the store holds, once there are 2 (the
    emergency call's caller and callee legs) or the timeout passed."""
    client = redis_client.Redis.from_url(url, socket_timeout=2)
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                found = len(client.keys("trunkline:dialog:*"))
            except redis_client.RedisError:
                found = 0
            if found >= 2 or time.monotonic() > deadline:
                return found
            time.sleep(0.2)
    finally:
        client.close()


@pytest.mark.parametrize("trouble", ["dead", "stalled"])
def test_admitted_without_the_store_then_adopted_by_another_edge(
    trouble: str, redis: RedisProcess, tmp_path: Path, carrier_port: int
) -> None:
    service = f"127.0.0.10:{free_port()}"  # both edges' address, as a Kubernetes Service gives pods
    secret = tmp_path / "nonce-secret"
    secret.write_text("the same for every edge")
    text = trunk_manifests(carrier_port, None)
    flags = ["--redis", redis.url, "--nonce-secret-file", str(secret), "--service-listen", service]
    pstn = answering(tmp_path / "pstn", carrier_port)
    a = Up(tmp_path / "a", text, [*flags, "--edge-id", "edge-a"], command="edge").start()
    b: Up | None = None
    assert redis.proc is not None
    try:
        if trouble == "dead":
            redis.stop(kill=True)
        else:
            redis.proc.send_signal(signal.SIGSTOP)
        # Held long enough for the store to come back, the second edge to start and the first to die.
        pbx = sipp.Background(lambda: sipp.uac(tmp_path / "pbx", service, "127.0.0.2", "911",
                                               hold_ms=60000, timeout=150))  # fmt: skip
        a.wait_busy(1, timeout=30)
        if trouble == "dead":
            redis.start()  # the same port, empty
        else:
            redis.proc.send_signal(signal.SIGCONT)
        # Stalled, the writes queued in Redis may land by themselves: this edge's own write is waited for.
        deadline = time.monotonic() + 30
        while "record of a call admitted without the store written" not in a.output():
            assert time.monotonic() < deadline, a.output()
            time.sleep(0.2)
        dialogs = stored_dialogs(redis.url, timeout=30)
        assert dialogs == 2, a.output()
        b = Up(tmp_path / "b", text, [*flags, "--edge-id", "edge-b"], command="edge").start()
        assert a.proc is not None
        a.proc.kill()
        a.proc.wait()
        result = pbx.result(timeout=180)  # the PBX's BYE, through the second edge, to the carrier
        cdrs = b.wait_cdrs(1, timeout=30)
    finally:
        if trouble == "stalled" and redis.proc.poll() is None:
            redis.proc.send_signal(signal.SIGCONT)
        pstn_out = sipp.stop(pstn)
        for edge in (a, b):
            if edge is not None:
                edge.stop()
    assert "emergency call admitted without the store" in a.output(), a.output()
    assert b is not None
    assert result.ok, result.output + pstn_out + b.output()
    assert sipp.received(pstn_out, "BYE") == 1, pstn_out
    assert "call adopted" in b.output(), b.output()
    assert [(c["callee"], c["emergency"], c["status"], c["hung_up"]) for c in cdrs] == [
        ("911", True, 200, "caller")
    ], cdrs  # fmt: skip
    client = redis_client.Redis.from_url(redis.url, socket_timeout=2)
    try:
        assert client.xlen("trunkline:cdr") == 1  # one CDR in the store's stream too
    finally:
        client.close()


def replayed(edge: Up, source: str, messages: str) -> list[str]:
    """The first lines of the edge's answers to an INVITE for 911 from `source` that carries the first
    Proxy-Authorization a PBX sent in `messages` (its SIPp message trace): a replay, on a new Call-ID."""
    credentials = next(line for line in messages.splitlines() if line.startswith("Proxy-Authorization:"))
    host, port = edge.sip.split(":")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((source, 0))
        sock.settimeout(1.0)
        local = sock.getsockname()
        request = (
            f"INVITE sip:911@{host}:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {local[0]}:{local[1]};branch=z9hG4bK-replay-{time.monotonic_ns()}\r\n"
            f"From: <sip:+14155550100@{local[0]}>;tag=replay\r\nTo: <sip:911@{host}>\r\n"
            f"Call-ID: replay-{time.monotonic_ns()}\r\nCSeq: 2 INVITE\r\n"
            f"Contact: <sip:pbx@{local[0]}:{local[1]}>\r\nMax-Forwards: 70\r\n"
            f"{credentials}\r\nContent-Length: 0\r\n\r\n"
        )
        sock.sendto(request.encode(), (host, int(port)))
        answers: list[str] = []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not any(a.split(" ")[1] >= "200" for a in answers):
            try:
                data = sock.recv(65535).decode(errors="replace")
            except TimeoutError:
                continue
            status_line = data.split("\r\n", 1)[0]
            stale = "stale=true" in data.lower()
            answers.append(status_line + (" stale" if stale else ""))
        return answers


def test_lockout_and_replays_hold_while_redis_is_down(
    edge: Up, redis: RedisProcess, tmp_path: Path, carrier_port: int
) -> None:
    pstn = answering(tmp_path / "pstn", carrier_port)
    try:
        redis.stop(kill=True)
        # A guesser: every call one wrong password (answered 407), until its source and username are
        # locked out (the default lockout: 10 failures in the window) and answered 403.
        # One call at a time (-l 1): each failure is counted before the next call's verdict.
        guesser = sipp.uac(tmp_path / "guesser", edge.sip, "127.0.0.3", "911", "-au", "acme", "-ap", "wrong",
                           "-l", "1", calls=12, timeout=60)  # fmt: skip
        # The PBX, elsewhere, with the right password: its call goes through.
        pbx = sipp.uac(tmp_path / "pbx", edge.sip, "127.0.0.4", "911", "-au", "acme", "-ap", "s3cret-acme",
                       "-trace_msg")  # fmt: skip
        messages = "".join(p.read_text(errors="replace") for p in (tmp_path / "pbx").glob("*_messages.log"))
        # Its credentials replayed from its own address (nonces are bound to it): refused as stale.
        answers = replayed(edge, "127.0.0.4", messages)
    finally:
        pstn_out = sipp.stop(pstn)
    log = edge.output()
    assert not guesser.ok
    assert "403 Forbidden (too many failed authentications)" in guesser.output, guesser.output + log
    assert pbx.ok, pbx.output + pstn_out + log
    assert any(a.startswith("SIP/2.0 407") and a.endswith("stale") for a in answers), answers
    assert not any(a.startswith(("SIP/2.0 18", "SIP/2.0 2")) for a in answers), answers
    assert sipp.received(pstn_out, "INVITE") == 1, pstn_out  # the PBX's call only
    assert "emergency call authenticated on this edge's own lockout state" in log, log
