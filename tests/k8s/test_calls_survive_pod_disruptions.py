"""Calls on the real node ride out what Kubernetes does to pods: a relay container killed mid-call
comes back in the same pod and restores its sessions from Redis (audio flows both ways again); a rolling
update of the edge Deployment under a steady call rate fails no call (draining edges leave the Service
before they refuse new calls, and their live calls end with their BYE)."""

from __future__ import annotations

import asyncio
import re
import socket
import time
import urllib.request
from pathlib import Path
from typing import Any

from tests.support import sipp
from tests.support.ports import free_port
from tests.support.wait import wait_for
from trunkline.sip.message import Response
from trunkline.sip.ua import UserAgent

from .node import Node
from .platform import (
    CALLEE,
    CALLER,
    CARRIER_IP,
    CARRIER_PORT,
    CHART,
    NAMESPACE,
    PBX_IP,
    READY_TIMEOUT,
    RELEASE,
    NodeParty,
    Platform,
    is_ready,
    media_address,
    sdp_for,
    talk_until_heard,
)

HTTP_PORT = 8080  # the chart's httpPort: /metrics of every pod


def _restored_sessions(pod_ip: str) -> float:
    """The relay's trunkline_media_sessions_restored counter (sessions brought back from Redis)."""
    with urllib.request.urlopen(f"http://{pod_ip}:{HTTP_PORT}/metrics", timeout=10) as response:
        text = response.read().decode()
    found = re.search(r"^trunkline_media_sessions_restored(?:_total)? (\S+)$", text, re.MULTILINE)
    assert found, text[-3000:]
    return float(found.group(1))


async def test_a_relay_killed_mid_call_restores_its_session_and_audio_flows_both_ways_again(
    platform: Platform, node: Node
) -> None:
    [relay] = platform.ready("media", 1)
    relay_name, relay_ip = relay["metadata"]["name"], relay["status"]["podIP"]
    restarts_before = relay["status"]["containerStatuses"][0]["restartCount"]
    pbx_rtp, carrier_rtp = NodeParty(PBX_IP), NodeParty(CARRIER_IP)
    carrier = UserAgent(host=CARRIER_IP, sdp=sdp_for(carrier_rtp.port))
    pbx = UserAgent(host=PBX_IP, sdp=sdp_for(pbx_rtp.port))
    seen: dict[str, Any] = {}

    async def talk_kill_the_relay_talk_again(answer: Response) -> None:
        assert carrier.last_invite is not None
        to_pbx, to_carrier = media_address(answer.body), media_address(carrier.last_invite.body)
        seen["before"] = await talk_until_heard(pbx_rtp, carrier_rtp, to_pbx, to_carrier, seed=1)
        seen["killed"] = await asyncio.to_thread(node.kill_container, NAMESPACE, relay_name)

        def back_and_ready() -> bool:
            pod = node.get("pod", "-n", NAMESPACE, relay_name)
            return pod["status"]["containerStatuses"][0]["restartCount"] > restarts_before and is_ready(pod)

        what = "the relay's new container Ready"
        await asyncio.to_thread(wait_for, back_and_ready, what, READY_TIMEOUT, interval=1.0)
        # The same addresses as before the kill: the restored session holds the same pod IP and ports.
        seen["after"] = await talk_until_heard(pbx_rtp, carrier_rtp, to_pbx, to_carrier, seed=2)

    start = time.monotonic()
    try:
        await carrier.start(CARRIER_PORT)
        await pbx.start(0)
        status = await pbx.call(
            f"sip:{CALLEE}@{platform.udp_ip}:5060", (platform.udp_ip, 5060), "udp", from_user=CALLER,
            during=talk_kill_the_relay_talk_again,
        )  # fmt: skip
        deadline = time.monotonic() + 20
        while not carrier.byes and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
    except BaseException:
        print(node.diagnostics(NAMESPACE))
        raise
    finally:
        await carrier.close()
        await pbx.close()
        pbx_rtp.close()
        carrier_rtp.close()
    print(f"relay killed and back, call through: {time.monotonic() - start:.1f} s")
    assert status == 200
    pbx_heard, carrier_heard = seen["before"]
    assert len(pbx_heard) >= 25 and len(carrier_heard) >= 25, "no audio before the kill"
    pbx_heard, carrier_heard = seen["after"]
    # RTP counted at both ends after the restart: both ways, byte for byte.
    assert len(pbx_heard) >= 25 and len(carrier_heard) >= 25, node.diagnostics(NAMESPACE)
    [pod] = [p for p in platform.pods("media") if p["metadata"]["name"] == relay_name]
    assert pod["status"]["podIP"] == relay_ip  # the same pod, not a replacement
    assert pod["status"]["containerStatuses"][0]["containerID"] != f"containerd://{seen['killed']}"
    assert _restored_sessions(relay_ip) >= 1  # from Redis, not a new session
    # The edge kept the call (no "media relay lost" BYE to the PBX); the PBX's BYE reached the carrier.
    assert [s.what for s in pbx.seen][-1] == "200 BYE", pbx.seen
    assert pbx.byes == 0 and carrier.byes == 1


async def test_a_rolling_update_of_the_edges_under_a_steady_call_rate_fails_no_call(
    platform: Platform, node: Node, tmp_path: Path
) -> None:
    old_edges = {p["metadata"]["name"] for p in platform.ready("edge", 2)}
    control_port = free_port(socket.SOCK_DGRAM, PBX_IP)
    # The carrier answers every call and its BYE where RFC 3261 says (Via): the BYE of a call another
    # edge took over comes from that edge. (SIPp's UAS answers the address the call began with.)
    carrier_rtp = NodeParty(CARRIER_IP)
    carrier = UserAgent(host=CARRIER_IP, sdp=sdp_for(carrier_rtp.port))
    await carrier.start(CARRIER_PORT)
    # 2 calls a second, each held 2 s: about 4 calls up at any time (the example trunk allows 10 and 5
    # a second), on every edge, until told to quit.
    pbx = sipp.uac_process(
        tmp_path / "pbx", f"{platform.udp_ip}:5060", PBX_IP, CALLEE, "-r", "2", "-cp", str(control_port),
        "-trace_err", calls=1_000_000, hold_ms=2000,
    )  # fmt: skip

    def rolled() -> bool:
        """Two Ready edges, none of them from before, and every old pod gone (it drained and exited)."""
        pods = node.get("pods", "-n", NAMESPACE, "-l", "app.kubernetes.io/component=edge")["items"]
        names = {p["metadata"]["name"] for p in pods}
        ready = [p for p in pods if is_ready(p) and not p["metadata"].get("deletionTimestamp")]
        return len(ready) >= 2 and not names & old_edges

    pbx_out = ""
    try:
        await asyncio.sleep(2)  # calls up before the rollout starts (not a proof of anything)
        assert pbx.poll() is None, sipp.stop(pbx)
        start = time.monotonic()
        # A changed edge setting: the operator writes a new pod template, the Deployment rolls.
        await asyncio.to_thread(
            node.helm, "upgrade", RELEASE, str(CHART), "--namespace", NAMESPACE, "--reuse-values",
            "--set=edge.resources.requests.cpu=120m",
        )  # fmt: skip
        # Polled each second: each poll is a kubectl, and this 2-core node is busy enough.
        what = "the edge Deployment rolled to new pods, the old ones gone"
        await asyncio.to_thread(wait_for, rolled, what, READY_TIMEOUT, interval=1.0)
        rollout = time.monotonic() - start
        sipp.quit_gracefully(PBX_IP, control_port)
        await asyncio.to_thread(pbx.wait, 120)
        deadline = time.monotonic() + 30  # the last calls' BYEs reach the carrier after the PBX's 200
        while carrier.byes < carrier.calls_answered and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
    except BaseException:
        print(node.diagnostics(NAMESPACE))
        raise
    finally:
        pbx_out = sipp.stop(pbx)
        await carrier.close()
        carrier_rtp.close()
    print(f"edge rollout under calls: {rollout:.1f} s")
    successful, failed = sipp.call_counts(pbx_out)
    errors = "".join(p.read_text(errors="replace")[-3000:] for p in (tmp_path / "pbx").glob("*_errors.log"))
    assert failed == 0, f"{pbx_out}\n{errors}\n{node.diagnostics(NAMESPACE)}"
    assert pbx.returncode == 0, pbx_out
    # Calls were placed all through the rollout (2 a second; at least 1 a second counted), and every one
    # ended with its BYE at the carrier (a call succeeds at the PBX only with the 200 to its BYE).
    assert successful >= rollout, (successful, rollout)
    assert carrier.calls_answered == successful and carrier.byes == successful, (
        carrier.calls_answered, carrier.byes, successful)  # fmt: skip
