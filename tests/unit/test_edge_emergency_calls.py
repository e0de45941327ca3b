"""Emergency calls: the numbers (table, flags, spec validation), the match as dialled, the route and
caller ID, and the edge admitting them past every limit but authentication (in memory, FakeStack)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from pydantic import ValidationError

from tests.support import edge_harness as world
from tests.support.spans import memory_spans
from trunkline import cli
from trunkline.cdr.sinks import _COLUMNS, MIGRATIONS
from trunkline.core import emergency as numbers
from trunkline.core.cdr import Cdr, CdrSettings
from trunkline.core.manifests import load, security_warnings
from trunkline.core.models import Carrier, Trunk
from trunkline.core.net import ConfigError
from trunkline.edge import emergency
from trunkline.edge.cdr import CallRecord, Direction, to_cdr
from trunkline.edge.context import EdgeOptions
from trunkline.edge.handover import call_record_from_data, call_record_to_data
from trunkline.edge.late_records import write_unstored
from trunkline.operator.builders import build_edge_deployment
from trunkline.operator.platform import Platform


def trunk(**spec: object) -> Trunk:
    return Trunk.model_validate({"metadata": {"name": "acme"}, "spec": spec})


def carrier(name: str, port: int, **spec: object) -> Carrier:
    return Carrier.model_validate(
        {"metadata": {"name": name}, "spec": {"gateways": [{"uri": f"sip:127.0.0.1:{port}"}], **spec}}
    )


# -- the numbers -------------------------------------------------------------------------------------
def test_the_installation_numbers_come_from_its_countries_and_its_own() -> None:
    assert numbers.installation_numbers(numbers.DEFAULT_COUNTRIES) == {"911", "933", "112"}
    assert numbers.installation_numbers(["uk", " AU "], ["9911"]) == {"999", "112", "000", "106", "9911"}
    assert numbers.installation_numbers([]) == frozenset()
    with pytest.raises(ValueError, match="unknown emergency country 'XX'"):
        numbers.installation_numbers(["XX"])
    for bad in ("9", "123456789", "+911", "91a", ""):
        with pytest.raises(ValueError, match="2 to 8 digits"):
            numbers.installation_numbers([], [bad])
    with pytest.raises(ValueError, match="at most 32"):
        numbers.installation_numbers([], ["99"] * 33)


def test_the_flags_set_them_and_a_bad_one_is_a_config_error() -> None:
    parser = argparse.ArgumentParser()
    numbers.add_arguments(parser)
    assert numbers.from_arguments(parser.parse_args([])) == {"911", "933", "112"}
    args = parser.parse_args(
        ["--emergency-countries", "UK", "--emergency-number", "18", "--emergency-number", "19"]
    )
    assert numbers.from_arguments(args) == {"999", "112", "18", "19"}
    assert numbers.from_arguments(parser.parse_args(["--emergency-countries", ""])) == frozenset()
    with pytest.raises(ConfigError, match="--emergency-countries"):
        numbers.from_arguments(parser.parse_args(["--emergency-countries", "NANP,Mars"]))
    with pytest.raises(ConfigError, match="--emergency-number"):
        numbers.from_arguments(parser.parse_args(["--emergency-number", "1; DROP"]))


def test_a_match_is_the_number_as_dialled_and_nothing_else() -> None:
    installation = numbers.installation_numbers(["NANP", "EU"])
    match = numbers.emergency_number
    assert match("911", installation) == "911"
    assert match("112;phone-context=+44", installation) == "112"  # parameters are not the number
    for other in ("+911", "1911", "9110", "91", "", None, "+14155550100", "911" * 1000):
        assert match(other, installation) is None
    assert match("9911", installation) is None and match("9911", installation, ["9911"]) == "9911"


def test_trunk_numbers_are_validated_and_bounded() -> None:
    assert trunk(emergency={"numbers": ["9911", "18"]}).spec.emergency.numbers == ["9911", "18"]
    assert trunk().spec.emergency.numbers == []
    for bad in (["+911"], ["9"], ["123456789"], ["9a1"], ["99"] * 33):
        with pytest.raises(ValidationError):
            trunk(emergency={"numbers": bad})
    with pytest.raises(ValidationError):
        carrier("psap", 5090, emergency="perhaps")


def test_the_platform_passes_the_installation_numbers_to_every_edge() -> None:
    def args(platform: Platform) -> list[str]:
        container = build_edge_deployment(platform, "voice")["spec"]["template"]["spec"]["containers"][0]
        return list(container["args"])

    default = args(Platform())
    assert default[default.index("--emergency-countries") + 1] == "NANP,EU"
    assert "--emergency-number" not in default
    none = args(Platform.model_validate({"edge": {"emergency": {"countries": [], "numbers": ["18"]}}}))
    assert none[none.index("--emergency-countries") + 1] == ""  # none: not the edge's own default
    assert none[none.index("--emergency-number") + 1] == "18"
    with pytest.raises(ValidationError):
        Platform.model_validate({"edge": {"emergency": {"countries": ["Mars"]}}})


# -- route, caller ID, validate --------------------------------------------------------------------
def test_emergency_calls_go_to_the_emergency_carriers_then_the_default_route() -> None:
    pstn, uk = carrier("pstn", 5071), carrier("uk", 5072, prefixes=["+44"])
    psap = carrier("psap", 5073, prefixes=["+1"], emergency=True)
    assert [t.uri for t in emergency.targets("911", [pstn, uk, psap])] == [
        "sip:127.0.0.1:5073", "sip:127.0.0.1:5071"
    ]  # fmt: skip
    assert [t.uri for t in emergency.targets("911", [uk, pstn])] == ["sip:127.0.0.1:5071"]
    assert emergency.targets("911", [uk]) == []  # nothing can take it: the caller gets the failure
    # An emergency carrier that is also the default route is not tried twice.
    both = carrier("both", 5074, emergency=True)
    assert [t.uri for t in emergency.targets("911", [both, uk])] == ["sip:127.0.0.1:5074"]


def test_an_emergency_call_moves_on_after_any_failure() -> None:
    for status in (403, 404, 486, 503, 603):
        assert emergency.tries_next(True, status)
    assert not emergency.tries_next(False, 403) and not emergency.tries_next(False, 486)
    assert emergency.tries_next(False, 503)


def test_the_caller_id_policy_replaces_but_never_refuses() -> None:
    dids = ["+14155550100"]
    assert emergency.caller_of(trunk(), "+14155550100", dids) == "+14155550100"
    assert emergency.caller_of(trunk(), "+14155559999", dids) == "+14155559999"  # reject: kept
    replace = trunk(outbound={"callerIdAction": "replace"})
    assert emergency.caller_of(replace, "+14155559999", dids) == "+14155550100"  # a call-back DID
    assert emergency.caller_of(trunk(), "", []) == "anonymous"
    assert emergency.caller_of(trunk(), "<script>" * 100, []) == "anonymous"  # not a number: not shown


def test_validate_warns_when_no_carrier_can_take_emergency_calls(tmp_path: Path) -> None:
    docs = world.manifest_docs()
    docs[1]["spec"]["prefixes"] = ["+1"]  # pstn is no longer the default route
    path = tmp_path / "m.yaml"
    path.write_text("\n---\n".join(json.dumps(d) for d in docs))
    config, problems = load([path])
    assert problems == []
    assert any("no Carrier can take emergency calls" in str(w) for w in security_warnings(config))
    docs[1]["spec"]["emergency"] = True
    path.write_text("\n---\n".join(json.dumps(d) for d in docs))
    config, _ = load([path])
    assert not any("emergency" in str(w) for w in security_warnings(config))


# -- the record ------------------------------------------------------------------------------------
def test_the_flag_reaches_the_cdr_the_handover_and_the_postgres_row() -> None:
    record = CallRecord("c1", "acme", Direction.OUTBOUND, "+14155550100", "911", 1000.0, emergency=True)
    cdr = to_cdr(record, CdrSettings())
    assert cdr.emergency is True and json.loads(cdr.to_json())["emergency"] is True
    assert list(Cdr.model_fields)[-1] == "emergency"  # added at the end of the record
    assert json.loads(record.to_json())["emergency"] is True
    assert call_record_from_data(call_record_to_data(record)).emergency is True
    old = call_record_to_data(record)
    del old["emergency"]  # a record written by an edge of the previous release
    assert call_record_from_data(old).emergency is False
    assert Cdr.from_json(cdr.to_json().replace(',"emergency":true', "")).emergency is False
    assert (
        _COLUMNS[-1] == "emergency"
        and "ADD COLUMN emergency boolean NOT NULL DEFAULT false" in MIGRATIONS[-1][1]
    )


# -- the edge --------------------------------------------------------------------------------------
async def test_past_channels_rate_prefixes_and_caller_id_as_dialled(tmp_path: Path) -> None:
    plan = {"countryCode": "1", "nationalPrefix": ""}
    h = world.build(tmp_path, channels=1, callsPerSecond=1, outbound={"allowedPrefixes": ["+44"]},
                    numbering=plan, emergency={"numbers": ["9911"]})  # fmt: skip
    await world.answered_call(h, call_id="held")
    for number, status in (("+442071234568", 503), ("+15551230000", 403)):
        await h.stack.deliver(world.invite(to=number), world.PBX)
        assert h.stack.responses[-1].status == status
    for number in ("911", "9911", "112"):  # "911" would be +1911 in this plan
        await h.stack.deliver(world.invite(to=number, caller="+19995550000", call_id=number), world.PBX)
        sent = h.stack.requests("INVITE")[-1].request
        assert (sent.uri.user, sent.call_id != number) == (number, True), h.stack.statuses()
    assert h.edge.active_calls == 4
    assert await h.store.channels_in_use(h.edge.ctx.calls.get("911").counters) == 4  # type: ignore[union-attr]
    b = h.stack.requests("INVITE")[-1]
    await h.stack.reply(b, 200, f"Contact: <sip:gw@{b.addr[0]}:{b.addr[1]}>")
    answer = h.stack.responses[-1]
    await h.stack.deliver(world.in_dialog("BYE", "112", answer.to.tag or "", 2), world.PBX)
    record = h.cdr.records[-1]
    assert (record.callee, record.caller, record.emergency, record.status) == (
        "112",
        "+19995550000",
        True,
        200,
    )
    metrics = generate_latest(h.edge.metrics.registry).decode()
    assert 'trunkline_emergency_calls_total{outcome="answered",trunk="acme"} 1.0' in metrics


async def test_while_draining_only_emergency_calls_get_in(tmp_path: Path) -> None:
    h = world.build(tmp_path)
    h.edge.draining = True
    await h.stack.deliver(world.invite(), world.PBX)
    assert (h.stack.responses[-1].status, h.stack.requests("INVITE")) == (503, [])
    await h.stack.deliver(world.invite(to="911"), world.PBX)
    assert [tx.request.uri.user for tx in h.stack.requests("INVITE")] == ["911"]
    # From a carrier, 911 is an inbound number like any other (here: no such DID).
    await h.stack.deliver(world.invite(to="911", source=world.CARRIER), world.CARRIER)
    assert h.stack.responses[-1].status == 404 and len(h.stack.requests("INVITE")) == 1


async def test_a_store_that_fails_admits_emergency_calls_on_local_state(tmp_path: Path) -> None:
    h = world.build(tmp_path, options=EdgeOptions(emergency_numbers=frozenset({"999"})))

    async def broken(*args: object, **kwargs: object) -> object:
        raise ConnectionError("store down")

    for name in ("admit", "auth_failures", "auth_failures_of", "first_use", "note_auth_failure",
                 "clear_auth_failures"):  # fmt: skip
        setattr(h.store, name, broken)
    await h.stack.deliver(world.invite(), world.PBX)
    assert h.stack.responses[-1].status == 503
    await h.stack.deliver(world.invite(to="911"), world.PBX)  # not this installation's: +911
    assert h.stack.responses[-1].status == 403  # outside allowedPrefixes, as any number
    await h.stack.deliver(world.invite(to="999", call_id="e1"), world.PBX)
    assert [tx.request.uri.user for tx in h.stack.requests("INVITE")] == ["999"]
    again = world.invite(to="999", call_id="e1").replace(";tag=caller", ";tag=another")
    await h.stack.deliver(again, world.PBX)  # the edge's own word on duplicates
    assert h.stack.responses[-1].status == 482 and len(h.stack.requests("INVITE")) == 1
    # A stranger is challenged as ever: authentication is not bypassed.
    await h.stack.deliver(world.invite(to="999", source=world.STRANGER), world.STRANGER)
    assert h.stack.responses[-1].status == 407 and len(h.stack.requests("INVITE")) == 1


async def test_the_record_of_a_call_admitted_without_the_store_is_written_once_it_answers(
    tmp_path: Path,
) -> None:
    h = world.build(tmp_path)

    async def broken(*args: object, **kwargs: object) -> object:
        raise ConnectionError("store down")

    for name in ("admit", "save_call"):
        setattr(h.store, name, broken)
    live = await world.answered_call(h, to="911")
    ended = await world.answered_call(h, to="911")
    ctx = h.edge.ctx
    assert set(ctx.unstored) == {live.call_id, ended.call_id}
    await write_unstored(ctx)  # still down: kept for the next keep-alive
    assert set(ctx.unstored) == {live.call_id, ended.call_id}
    for name in ("admit", "save_call"):
        delattr(h.store, name)  # the store answers again
    # Before the record is written, the store knows nothing of the call: it is still this edge's.
    await h.stack.deliver(world.in_dialog("BYE", ended.call_id, ended.a_tag, 2), world.PBX)
    bye_answer = h.stack.responses[-1]
    assert (bye_answer.cseq.method, bye_answer.status) == ("BYE", 200) and set(ctx.unstored) == {live.call_id}
    await write_unstored(ctx)
    assert ctx.unstored == {}
    call = ctx.calls.get(live.call_id)
    assert call is not None and await h.store.channels_in_use(call.counters) == 1  # the ended one's: none
    # The record is every call's: another edge finds it by either leg's dialog, answered, with its legs.
    state = await h.store.adopt_call(call.dialog_keys[1], "edge-2")
    assert state is not None and state["record"]["emergency"] and state["record"]["answer"], state
    assert await h.store.adopt_call("|".join((ended.call_id, ended.a_tag, "caller")), "edge-2") is None


async def test_the_call_trace_says_emergency(tmp_path: Path) -> None:
    with memory_spans() as spans:
        h = world.build(tmp_path)
        call = await world.answered_call(h, to="911")
        await h.stack.deliver(world.in_dialog("BYE", call.call_id, call.a_tag, 2), world.PBX)
        roots = [s for s in spans.get_finished_spans() if s.parent is None and s.name == "call"]
    assert [dict(s.attributes or {}).get("trunkline.emergency") for s in roots] == [True]


@pytest.mark.parametrize(
    ("command", "flags", "said"),
    [("up", ["--emergency-countries", "Mars"], "unknown emergency country 'Mars'"),
     ("edge", ["--emergency-number", "1x"], "'1x' is not 2 to 8 digits")],
)  # fmt: skip
def test_a_bad_emergency_flag_is_one_line_and_nothing_starts(
    capsys: pytest.CaptureFixture[str], command: str, flags: list[str], said: str
) -> None:
    examples = str(Path(__file__).resolve().parents[2] / "examples")
    assert cli.main([command, "-f", examples, "--sip-listen", "127.0.0.1:0", *flags]) == 1
    out = capsys.readouterr()
    assert said in out.out + out.err and "Traceback" not in out.out + out.err
