"""Calls end when they should even if nobody hangs up: a session timer (RFC 4028) that is no longer
refreshed, and the edge's maximum call duration. Also early media (183 with SDP) and UPDATE on the way."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.support import sipp
from tests.support.ports import free_port
from tests.support.trunkline_up import BIN, Up, manifests


def test_early_media_update_refreshes_and_the_session_timer_ends_the_call(tmp_path: Path) -> None:
    carrier_port = free_port()
    edge = Up(tmp_path / "edge", manifests(carrier_port, free_port()), command="edge").start()
    gateway = sipp.uas(tmp_path / "gw", "127.0.0.1", carrier_port, scenario="gateway_early_media_update.xml")
    try:
        pbx = sipp.uac(tmp_path / "pbx", edge.sip, "127.0.0.2", "+442071234567",
                       scenario="pbx_early_media_update.xml")  # fmt: skip
        cdrs = edge.wait_cdrs(1)
    finally:
        gateway_out = sipp.stop(gateway)
        edge.stop()
    assert pbx.ok, pbx.output + gateway_out + edge.output()  # it got the 183 with SDP, and the edge's BYE
    assert sipp.received(gateway_out, "UPDATE") == 1 and sipp.received(gateway_out, "BYE") == 1, gateway_out
    [cdr] = cdrs
    assert cdr["hung_up"] == "edge" and cdr["reason"] == "session timer expired", cdr
    # Answered at 0 with a 3 s session, refreshed by the UPDATE at 1 s: it ends at 4 s, not at 3 s.
    assert 3.6 < float(str(cdr["duration"])) < 6, cdr


def test_the_edge_ends_a_call_at_its_maximum_duration(tmp_path: Path) -> None:
    carrier_port = free_port()
    edge = Up(tmp_path / "edge", manifests(carrier_port, free_port()), ["--max-call-duration", "2"],
              command="edge").start()  # fmt: skip
    gateway = sipp.uas(tmp_path / "gw", "127.0.0.1", carrier_port)  # waits for a BYE too
    try:
        pbx = sipp.uac(
            tmp_path / "pbx", edge.sip, "127.0.0.2", "+442071234567", scenario="pbx_waits_for_bye.xml"
        )
        cdrs = edge.wait_cdrs(1)
    finally:
        gateway_out = sipp.stop(gateway)
        edge.stop()
    assert pbx.ok, pbx.output + edge.output()
    assert "Successful call" in gateway_out and sipp.received(gateway_out, "BYE") == 1, gateway_out
    [cdr] = cdrs
    assert cdr["hung_up"] == "edge" and cdr["reason"] == "maximum call duration", cdr
    assert 1.9 < float(str(cdr["duration"])) < 3.5, cdr


def test_a_maximum_duration_of_zero_is_refused(tmp_path: Path) -> None:
    (tmp_path / "m.yaml").write_text(manifests(free_port(), free_port()))
    args = [
        "-f",
        str(tmp_path / "m.yaml"),
        "--sip-listen",
        f"127.0.0.1:{free_port()}",
        "--max-call-duration",
        "0",
    ]
    done = subprocess.run([BIN, "edge", *args], capture_output=True, text=True, timeout=30)
    assert done.returncode == 1
    assert "--max-call-duration: must be more than 0 seconds" in done.stdout + done.stderr
