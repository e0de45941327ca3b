"""The chart installed on the real node (node.py) and what the tests there share: a PBX and a carrier on
the node's extra addresses, RTP endpoints, the edge pod a flow goes to, the CDRs the exporter printed."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.wait import wait_for
from trunkline.media.testing import pcmu_stream, recvfrom
from trunkline.sip.message import Response
from trunkline.sip.sdp import parse_sdp
from trunkline.sip.ua import UserAgent

from .node import NODE_IP, Node, NodeError

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "trunkline"
NAMESPACE = "voice"
RELEASE = "tl"
PREFIX = f"{RELEASE}-trunkline"
# Addresses node.sh gives the bridge besides the node's own: the PBX and the carrier on the node.
PBX_IP, CARRIER_IP = "10.88.255.253", "10.88.255.254"
CARRIER_PORT = 5090
CALLEE, CALLER = "+442071234567", "+14155550100"
READY_TIMEOUT = 300  # a loaded 2-core machine; typically 20 s

REDIS = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: redis}
spec:
  selector: {matchLabels: {app: redis}}
  template:
    metadata: {labels: {app: redis}}
    spec:
      containers:
        - name: redis
          image: IMAGE
          imagePullPolicy: Never
          command: [redis-server, --port, "6379", --protected-mode, "no", --save, "", --appendonly, "no"]
          ports: [{containerPort: 6379}]
          readinessProbe: {exec: {command: [redis-cli, ping]}, periodSeconds: 2}
---
apiVersion: v1
kind: Service
metadata: {name: redis}
spec:
  selector: {app: redis}
  ports: [{port: 6379}]
"""


def examples_for_this_node() -> str:
    """examples/*.yaml with the node's addresses for the PBX and the carrier (pods cannot use 127.0.0.1)."""
    text = "\n---\n".join(p.read_text() for p in sorted((ROOT / "examples").glob("*.yaml")))
    return (
        # The test UA's TCP connections leave from the node's own address, not the one it listens on.
        text.replace("- 127.0.0.2/32", f"- {PBX_IP}/32\n      - {NODE_IP}/32")
        .replace("127.0.0.1/32", f"{CARRIER_IP}/32")
        .replace("sip:127.0.0.1:5090", f"sip:{CARRIER_IP}:{CARRIER_PORT}")
        .replace("127.0.0.1", PBX_IP)
    )


@dataclass
class Platform:
    node: Node
    udp_ip: str
    udp_node_port: int
    tcp_ip: str

    def pods(self, component: str) -> list[dict[str, Any]]:
        selector = f"app.kubernetes.io/component={component}"
        items: list[dict[str, Any]] = self.node.get("pods", "-n", NAMESPACE, "-l", selector)["items"]
        return [p for p in items if not p["metadata"].get("deletionTimestamp")]

    def ready(self, component: str, count: int) -> list[dict[str, Any]]:
        pods = [p for p in self.pods(component) if is_ready(p)]
        return pods if len(pods) >= count else []


def is_ready(pod: dict[str, Any]) -> bool:
    conditions = pod.get("status", {}).get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def install(node: Node) -> Platform:
    node.kubectl("create", "namespace", NAMESPACE)
    node.kubectl("apply", "-n", NAMESPACE, "-f", "-", input=REDIS.replace("IMAGE", node.redis_image))
    repository, tag = node.image.rsplit(":", 1)
    node.helm(
        "install", RELEASE, str(CHART), "--namespace", NAMESPACE, "--wait", "--timeout", "5m",
        f"--set=image.repository={repository}", f"--set=image.tag={tag}", "--set=image.pullPolicy=Never",
        "--set=control.replicas=1", "--set=media.replicas=1", "--set=edge.autoscaling.enabled=false",
        "--set=edge.replicas=2", "--set=edge.udpService.type=NodePort",
        "--set=edge.resources.requests.cpu=100m", "--set=media.resources.requests.cpu=100m",
        "--set=media.portRange.start=20000", "--set=media.portRange.end=20999",
        "--set=operator.resyncSeconds=15",
    )  # fmt: skip
    node.kubectl("apply", "-n", NAMESPACE, "-f", "-", input=examples_for_this_node())
    udp = wait_for(
        lambda: get_or_none(node, "service", f"{PREFIX}-edge-udp"), "the edge's UDP Service", READY_TIMEOUT
    )
    tcp = wait_for(
        lambda: get_or_none(node, "service", f"{PREFIX}-edge-tcp"), "the edge's TCP Service", READY_TIMEOUT
    )
    return Platform(
        node, udp["spec"]["clusterIP"], udp["spec"]["ports"][0]["nodePort"], tcp["spec"]["clusterIP"]
    )


def get_or_none(node: Node, kind: str, name: str) -> dict[str, Any] | None:
    try:
        found: dict[str, Any] = node.get(kind, name, "-n", NAMESPACE)
        return found
    except NodeError:
        return None


class NodeParty:
    """An RTP endpoint on one of the node's addresses."""

    def __init__(self, host: str) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.sock.setblocking(False)
        self.port = int(self.sock.getsockname()[1])

    async def recv_all(self, count: int, timeout: float = 10.0) -> list[bytes]:
        return [(await asyncio.wait_for(recvfrom(self.sock), timeout))[0] for _ in range(count)]

    def close(self) -> None:
        self.sock.close()


def sdp_for(port: int) -> bytes:
    return (
        b"v=0\r\no=peer 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\n"
        + f"m=audio {port} RTP/AVP 0\r\n".encode()
        + b"a=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n"
    )


def media_address(sdp: bytes) -> tuple[str, int]:
    description = parse_sdp(sdp)
    audio = description.media[0]
    return (audio.connection_address or description.connection_address or ""), audio.port


async def talk_until_heard(
    pbx_rtp: NodeParty, carrier_rtp: NodeParty, to_pbx: tuple[str, int], to_carrier: tuple[str, int],
    seed: int, need: int = 25, timeout: float = 30.0,
) -> tuple[list[bytes], list[bytes]]:  # fmt: skip
    """Both ends send 20 ms RTP packets (payloads of their own, by `seed`) to the relay's addresses until
    each heard `need` of the other's packets of this exchange, or `timeout`. Returns what the PBX and the
    carrier heard of them (byte for byte: a packet relayed altered or from another exchange counts not)."""
    count = int(timeout / 0.02) + 1
    out_pbx, out_carrier = (pcmu_stream(count, ssrc=0x3000 + seed, seed=seed),
                            pcmu_stream(count, ssrc=0x4000 + seed, seed=seed + 1))  # fmt: skip
    sent_by_pbx, sent_by_carrier = set(out_pbx), set(out_carrier)
    pbx_heard: list[bytes] = []
    carrier_heard: list[bytes] = []
    deadline = time.monotonic() + timeout
    for a, b in zip(out_pbx, out_carrier, strict=True):
        if (len(pbx_heard) >= need and len(carrier_heard) >= need) or time.monotonic() > deadline:
            break
        pbx_rtp.sock.sendto(a, to_pbx)
        carrier_rtp.sock.sendto(b, to_carrier)
        await asyncio.sleep(0.02)
        for party, heard, other_sent in ((pbx_rtp, pbx_heard, sent_by_carrier),
                                         (carrier_rtp, carrier_heard, sent_by_pbx)):  # fmt: skip
            while True:
                try:
                    data, _ = party.sock.recvfrom(65536)
                except BlockingIOError:
                    break
                if data in other_sent:
                    heard.append(data)
    return pbx_heard, carrier_heard


async def call_with_audio(target: tuple[str, int], transport: str, packets: int = 50) -> dict[str, Any]:
    """A call from the PBX to the carrier through `target`; both send `packets` RTP packets to the
    relay's addresses in their SDP. What each end heard and sent, and the final status."""
    pbx_rtp, carrier_rtp = NodeParty(PBX_IP), NodeParty(CARRIER_IP)
    carrier = UserAgent(host=CARRIER_IP, sdp=sdp_for(carrier_rtp.port))
    pbx = UserAgent(host=PBX_IP, sdp=sdp_for(pbx_rtp.port))
    result: dict[str, Any] = {}

    async def talk(answer: Response) -> None:
        assert carrier.last_invite is not None
        to_pbx, to_carrier = media_address(answer.body), media_address(carrier.last_invite.body)
        result["relay"] = (to_pbx, to_carrier)
        out_pbx, out_carrier = (
            pcmu_stream(packets, ssrc=0x1111, seed=1),
            pcmu_stream(packets, ssrc=0x2222, seed=2),
        )
        for a, b in zip(out_pbx, out_carrier, strict=True):
            pbx_rtp.sock.sendto(a, to_pbx)
            carrier_rtp.sock.sendto(b, to_carrier)
            await asyncio.sleep(0.005)
        result["carrier_heard"] = await carrier_rtp.recv_all(packets)
        result["pbx_heard"] = await pbx_rtp.recv_all(packets)
        result["pbx_sent"], result["carrier_sent"] = out_pbx, out_carrier

    try:
        await carrier.start(CARRIER_PORT)
        await pbx.start(0)
        result["status"] = await pbx.call(
            f"sip:{CALLEE}@{target[0]}:{target[1]}", target, transport, from_user=CALLER, during=talk
        )
        deadline = time.monotonic() + 15
        while not carrier.byes and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        result["carrier_byes"] = carrier.byes
        result["invite_to_carrier"] = carrier.last_invite.to_bytes() if carrier.last_invite else b""
    finally:
        await carrier.close()
        await pbx.close()
        pbx_rtp.close()
        carrier_rtp.close()
    return result


def edge_pod_of(platform: Platform, pbx_port: int) -> str:
    """The edge pod kube-proxy sends the PBX's UDP flow to (from the node's conntrack table)."""
    out = subprocess.run(
        ["conntrack", "-L", "-p", "udp", "--orig-dst", platform.udp_ip, "--sport", str(pbx_port)],
        capture_output=True, text=True, timeout=30, check=False,
    ).stdout  # fmt: skip
    by_ip = {p["status"].get("podIP"): p["metadata"]["name"] for p in platform.pods("edge")}
    for line in out.splitlines():
        sources = [f[len("src=") :] for f in line.split() if f.startswith("src=")]
        if len(sources) == 2 and sources[1] in by_ip:
            return by_ip[sources[1]]
    raise AssertionError(f"no conntrack entry of the PBX's flow to an edge pod:\n{out}")


def cdrs_of(platform: Platform, node: Node, call_id: str) -> list[dict[str, Any]]:
    """The CDRs of `call_id` among the JSON lines the CDR exporter pod printed."""
    [pod] = platform.pods("cdr")
    found = []
    for line in node.kubectl("logs", "-n", NAMESPACE, pod["metadata"]["name"]).splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue  # its own log lines
        if isinstance(record, dict) and record.get("call_id") == call_id:
            found.append(record)
    return found
