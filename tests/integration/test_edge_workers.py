"""`trunkline edge --workers 2`: two edge processes share the SIP port (SO_REUSEPORT) and the calls
(Redis). The PBX (SIPp, one socket per call) spreads its calls over both workers; an in-dialog request
at the other worker is carried there (through the store, as across pods); a worker killed mid-call
has its calls carried by the other and is started again; SIGTERM drains every worker."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support import sipp
from tests.support.certs import tls_contexts
from tests.support.edge_harness import SDP, in_dialog, invite
from tests.support.ports import free_port
from tests.support.processes import TRUNKLINE
from tests.support.redis_server import RedisProcess
from tests.support.trunkline_up import Up, manifests
from trunkline.edge.digest_client import DigestClient, read_challenge
from trunkline.sip.compiled import COMPILED
from trunkline.sip.message import Response, parse_message
from trunkline.sip.ua import UserAgent

CALLS = 10


def sample(metrics: str, name: str, **labels: str) -> dict[str, float]:
    """Value of sample `name` with `labels`, by worker."""
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(metrics):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                worker = s.labels.get("worker", "")
                found[worker] = found.get(worker, 0.0) + s.value
    return found


def wait_for(check: object, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not callable(check) or not check():
        assert time.monotonic() < deadline, f"not within {timeout:.0f} s: {what}"
        time.sleep(0.2)


def worker_pids(parent: int) -> dict[int, int]:
    """The parent's workers: index -> pid (from their command lines)."""
    pids = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            args = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if "--worker-of" in args and args[args.index("--worker-of") + 1] == str(parent):
            edge_id = args[len(args) - 1 - args[::-1].index("--edge-id") + 1]
            pids[int(edge_id.rsplit("-w", 1)[1])] = int(entry.name)
    return pids


def readyz(edge: Up) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{edge.http_port}/readyz", timeout=5) as r:
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


@pytest.fixture
def workers(tmp_path: Path, redis: RedisProcess, carrier_port: int) -> Iterator[Up]:
    flags = ["--redis", redis.url, "--workers", "2", "--grace", "60", "--cdr-spool", str(tmp_path / "spool")]
    edge = Up(tmp_path / "edge", manifests(carrier_port, free_port()), flags, command="edge")
    edge.start_timeout = 90.0  # three processes starting on a loaded machine
    edge.start()
    yield edge
    if edge.proc is not None and edge.proc.poll() is None:
        edge.stop()


def midcall_calls(tmp_path: Path, edge: Up, calls: int, hold_ms: int) -> sipp.Background:
    """`calls` PBX calls (answer, re-INVITE, INFO, the gateway's BYE), each from a socket of its own."""
    # The trunk takes 5 calls/s (its default cap, counted in the store across workers): 2/s stays under.
    spread = ["-t", "un", "-max_socket", "100", "-r", "2", "-l", str(calls)]
    return sipp.Background(lambda: sipp.uac(
        tmp_path / "pbx", edge.sip, "127.0.0.2", "+442071234567", *spread,
        scenario="pbx_midcall.xml", calls=calls, hold_ms=hold_ms, timeout=90))  # fmt: skip


def test_two_workers_share_the_port_and_carry_each_others_calls(
    workers: Up, tmp_path: Path, carrier_port: int
) -> None:
    gateway = sipp.uas(tmp_path / "gw", "127.0.0.1", carrier_port, scenario="gateway_midcall.xml")
    try:
        result = midcall_calls(tmp_path, workers, CALLS, hold_ms=500).result(timeout=120)
        cdrs = workers.wait_cdrs(CALLS, timeout=20)
    finally:
        gateway_out = sipp.stop(gateway)
    assert result.ok, result.output + gateway_out + workers.output()
    assert sipp.received(gateway_out, "INFO") == CALLS, gateway_out
    assert len(cdrs) == CALLS and all(c["status"] == 200 and c["hung_up"] == "callee" for c in cdrs), cdrs
    invites = sample(workers.metrics(), "trunkline_sip_requests_total", method="INVITE", direction="received")
    assert set(invites) == {"0", "1"} and all(n >= 1 for n in invites.values()), invites  # both took calls
    ids = set(re.findall(r'msg="sip listening" .* edge_id=(\S+)', workers.output()))
    assert {i.rsplit("-", 1)[1].split("/")[0] for i in ids} == {"w0", "w1"}, ids  # each its own edge id
    # and each says it runs the compiled SIP core, whole (sip/compiled.py)
    forms = re.findall(r'msg="sip listening" .* sip_compiled=(\S+)', workers.output())
    assert forms == [f"{len(COMPILED)}/{len(COMPILED)}"] * 2, forms


def own_ports(edge: Up) -> set[int]:
    """The workers' own SIP ports (each says where it listens)."""
    return {int(p) for p in re.findall(r'msg="sip listening" udp_tcp=127\.0\.0\.1:(\d+)', edge.output())}


def receive(sock: socket.socket, status: bytes, timeout: float = 20.0) -> tuple[bytes, int]:
    """The first datagram starting with `status` (provisional answers are skipped) and its source port."""
    deadline = time.monotonic() + timeout
    while True:
        sock.settimeout(max(0.1, deadline - time.monotonic()))
        data, addr = sock.recvfrom(65535)
        if data.startswith(status):
            return data, addr[1]
        assert time.monotonic() < deadline, f"no {status!r} within {timeout} s"


def test_an_in_dialog_request_at_the_other_worker_is_carried_there(
    workers: Up, tmp_path: Path, carrier_port: int
) -> None:
    gateway = sipp.uas(tmp_path / "gw", "127.0.0.1", carrier_port)
    pbx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    pbx.bind(("127.0.0.2", 0))
    try:
        wait_for(lambda: len(own_ports(workers)) == 2, "both workers listening")
        source = pbx.getsockname()
        pbx.sendto(invite(call_id="cross", source=source, body=SDP).encode(), ("127.0.0.1", workers.sip_port))
        answer, first = receive(pbx, b"SIP/2.0 200")  # from the worker that took the INVITE: its own port
        [other] = own_ports(workers) - {first}
        to_tag = re.search(r"\r\nTo:[^\r]*;tag=([^;\r]+)", answer.decode())
        assert to_tag, answer
        pbx.sendto(in_dialog("ACK", "cross", to_tag[1], 1, source).encode(), ("127.0.0.1", workers.sip_port))
        pbx.sendto(in_dialog("BYE", "cross", to_tag[1], 2, source).encode(), ("127.0.0.1", other))
        ok, answered_from = receive(pbx, b"SIP/2.0 200")
        [cdr] = workers.wait_cdrs(1, timeout=20)
    finally:
        gateway_out = sipp.stop(gateway, finish_within=5)
        pbx.close()
    assert b"CSeq: 2 BYE" in ok and answered_from == other, ok  # the other worker took the call over
    assert "call adopted" in workers.output(), workers.output()
    assert cdr["status"] == 200 and cdr["hung_up"] == "caller", cdr
    assert sipp.received(gateway_out, "BYE") == 1, gateway_out


def test_a_challenge_from_one_worker_is_answered_at_the_other(
    workers: Up, tmp_path: Path, carrier_port: int
) -> None:
    # No --nonce-secret-file: the parent gives its workers one key, so that a caller's INVITE with
    # credentials may land on another worker than the one that challenged it.
    gateway = sipp.uas(tmp_path / "gw", "127.0.0.1", carrier_port)
    pbx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    pbx.bind(("127.0.0.3", 0))  # not in the trunk's IP ACL: digest
    try:
        wait_for(lambda: len(own_ports(workers)) == 2, "both workers listening")
        first, other = sorted(own_ports(workers))
        source = pbx.getsockname()
        pbx.sendto(invite(call_id="digest", source=source, branch="z9hG4bK-one", body=SDP).encode(),
                   ("127.0.0.1", first))  # fmt: skip
        challenge, _ = receive(pbx, b"SIP/2.0 407")
        to = re.search(r"\r\nTo: ([^\r]*)", challenge.decode())
        assert to, challenge
        ack = invite(call_id="digest", source=source, branch="z9hG4bK-one").replace("INVITE", "ACK")
        pbx.sendto(re.sub(r"\r\nTo: [^\r]*", f"\r\nTo: {to[1]}", ack).encode(), ("127.0.0.1", first))
        parsed = parse_message(challenge)
        assert isinstance(parsed, Response)
        credentials = DigestClient("acme", "s3cret-acme").authorization(
            read_challenge(parsed), "INVITE", "sip:+442071234567@127.0.0.1:5060"
        )
        again = invite(call_id="digest", source=source, headers=(f"Proxy-Authorization: {credentials}",),
                       body=SDP).replace("CSeq: 1 INVITE", "CSeq: 2 INVITE")  # fmt: skip
        pbx.sendto(again.encode(), ("127.0.0.1", other))
        answer, answered_from = receive(pbx, b"SIP/2.0 200")
        tag = re.search(r"\r\nTo:[^\r]*;tag=([^;\r]+)", answer.decode())
        assert tag, answer
        pbx.sendto(in_dialog("ACK", "digest", tag[1], 2, source).encode(), ("127.0.0.1", other))
        pbx.sendto(in_dialog("BYE", "digest", tag[1], 3, source).encode(), ("127.0.0.1", other))
        receive(pbx, b"SIP/2.0 200")
        [cdr] = workers.wait_cdrs(1, timeout=20)
    finally:
        sipp.stop(gateway, finish_within=5)
        pbx.close()
    assert answered_from == other  # the worker that did not issue the nonce took the credentials
    assert cdr["status"] == 200, cdr


async def wait_until(check: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(check):
        assert time.monotonic() < deadline, f"not within {timeout:.0f} s: {what}"
        await asyncio.sleep(0.2)


def live_calls(edge: Up) -> float:
    return sum(sample(edge.metrics(), "trunkline_component_busy").values())


async def test_a_killed_worker_s_calls_go_on_and_it_is_started_again(
    workers: Up, tmp_path: Path, carrier_port: int
) -> None:
    # The gateway answers each request where its Via says (rport: its source), as RFC 3261 18.2.2 has
    # it: a worker sends from its own port, so the answers to the requests of a call's new worker
    # reach that worker (SIPp would answer every request of a call to the first worker's address).
    assert workers.proc is not None
    gateway = UserAgent("127.0.0.1", ring=False)
    await gateway.start(carrier_port)
    calls = 6
    try:
        pbx = sipp.Background(lambda: sipp.uac(
            tmp_path / "pbx", workers.sip, "127.0.0.2", "+442071234567", "-t", "un", "-max_socket", "100",
            "-r", "2", "-l", str(calls), calls=calls, hold_ms=8000, timeout=90))  # fmt: skip
        await wait_until(lambda: live_calls(workers) == calls, f"{calls} live calls")
        busy = sample(await asyncio.to_thread(workers.metrics), "trunkline_component_busy")
        victim = int(max(busy, key=lambda w: busy[w]))
        before = worker_pids(workers.proc.pid)
        os.kill(before[victim], signal.SIGKILL)
        result = await asyncio.to_thread(pbx.result, 120)
        cdrs = await asyncio.to_thread(workers.wait_cdrs, calls, 20)
    finally:
        await gateway.close()
    assert result.ok, result.output + workers.output()
    assert gateway.byes == calls  # each caller's BYE reached the gateway, through the live worker
    assert len(cdrs) == calls and all(c["status"] == 200 and c["hung_up"] == "caller" for c in cdrs), cdrs
    assert "call adopted" in workers.output()
    # The parent started it again: a new process in that slot, counted, and the edge ready again.
    await wait_until(lambda: readyz(workers) == 200, "the edge ready again with its worker restarted")
    after = worker_pids(workers.proc.pid)
    assert set(after) == {0, 1} and after[victim] != before[victim], (before, after)
    restarts = sample(await asyncio.to_thread(workers.metrics), "trunkline_edge_worker_restarts_total")
    assert restarts == {"": 1.0}, restarts
    # The same worker id, a new owner of it (a new incarnation), with its own spool folder.
    owners = re.findall(rf'msg="sip listening" .*edge_id=\S*-w{victim}/(\w+)', workers.output())
    assert len(set(owners)) == 2, owners
    assert {folder.name for folder in (tmp_path / "spool").iterdir()} == {"w0", "w1"}


def test_sigterm_drains_every_worker(workers: Up, tmp_path: Path, carrier_port: int) -> None:
    assert workers.proc is not None
    gateway = sipp.uas(tmp_path / "gw", "127.0.0.1", carrier_port, scenario="gateway_midcall.xml")
    calls = 6
    try:
        pbx = midcall_calls(tmp_path, workers, calls, hold_ms=5000)
        wait_for(lambda: sum(sample(workers.metrics(), "trunkline_component_busy").values()) == calls,
                 f"{calls} live calls")  # fmt: skip
        pids = worker_pids(workers.proc.pid)
        workers.proc.send_signal(signal.SIGTERM)
        wait_for(lambda: readyz(workers) == 503, "not ready while draining", timeout=20)
        result = pbx.result(timeout=120)  # the calls in progress end normally
        code = workers.proc.wait(timeout=60)
        cdrs = workers.wait_cdrs(calls, timeout=5)
    finally:
        gateway_out = sipp.stop(gateway)
    assert result.ok, result.output + gateway_out + workers.output()
    assert len(cdrs) == calls and all(c["status"] == 200 and c["hung_up"] == "callee" for c in cdrs), cdrs
    assert code == 0, workers.output()
    for pid in pids.values():  # every worker exited with the parent
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()
    assert workers.output().count("msg=stopped") >= 2, workers.output()


def test_workers_end_with_their_parent(workers: Up) -> None:
    assert workers.proc is not None
    pids = worker_pids(workers.proc.pid)
    assert set(pids) == {0, 1}
    workers.proc.kill()  # no SIGTERM to forward: the workers notice they lost their parent
    workers.proc.wait()
    wait_for(lambda: not any(Path(f"/proc/{pid}").exists() for pid in pids.values()), "workers gone")
    assert workers.output().count("parent gone: draining") == 2, workers.output()


def options(source: tuple[str, int], branch: str) -> bytes:
    return (
        "OPTIONS sip:127.0.0.1 SIP/2.0\r\n"
        f"Via: SIP/2.0/TLS {source[0]}:{source[1]};branch=z9hG4bK-{branch}\r\n"
        f"From: <sip:pbx@{source[0]}>;tag=o{branch}\r\nTo: <sip:127.0.0.1>\r\n"
        f"Call-ID: options-{branch}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def test_workers_share_the_tls_port_and_take_their_own_ports_from_worker_ports(
    tmp_path: Path, redis: RedisProcess, carrier_port: int
) -> None:
    _, client, cert, key = tls_contexts(tmp_path)
    tls_port, first = free_port(), free_port()
    flags = ["--redis", redis.url, "--workers", "2", "--tls-listen", f"127.0.0.1:{tls_port}",
             "--tls-cert", str(cert), "--tls-key", str(key), "--worker-ports", str(first)]  # fmt: skip
    edge = Up(tmp_path / "edge", manifests(carrier_port, free_port()), flags, command="edge")
    edge.start_timeout = 90.0
    edge.start()  # ready: both workers listen on the one TLS port (without SO_REUSEPORT one could not)
    try:
        for n in range(16):  # connections from new source ports: the kernel spreads them
            raw = socket.create_connection(("127.0.0.1", tls_port), timeout=20)
            with client.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                tls.sendall(options(tls.getsockname(), str(n)))
                assert tls.recv(65535).startswith(b"SIP/2.0 "), "no answer over TLS"
        metrics = edge.metrics()
    finally:
        edge.stop()
    taken = sample(metrics, "trunkline_sip_requests_total", method="OPTIONS", direction="received")
    assert set(taken) == {"0", "1"} and sum(taken.values()) == 16, taken
    assert own_ports(edge) == {first, first + 1}  # worker i's own SIP port: FIRST + i (a network policy's)


def test_workers_that_keep_dying_end_the_parent(tmp_path: Path, redis: RedisProcess) -> None:
    (tmp_path / "m.yaml").write_text(manifests(free_port(), free_port()))
    taken = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    taken.bind(("127.0.0.1", 0))  # without SO_REUSEPORT: no worker can share the SIP port with it
    port = taken.getsockname()[1]
    try:
        done = subprocess.run(
            [TRUNKLINE, "edge", "-f", str(tmp_path / "m.yaml"), "--sip-listen", f"127.0.0.1:{port}",
             "--http-listen", f"127.0.0.1:{free_port()}", "--redis", redis.url, "--workers", "2"],
            capture_output=True, text=True, timeout=240,
        )  # fmt: skip
    finally:
        taken.close()
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]
    assert "edge workers keep dying: stopping" in done.stdout + done.stderr
    # The first death and 5 restarts within a minute (more on a machine so slow that starts take longer).
    assert (done.stdout + done.stderr).count("edge worker exited") >= 6
