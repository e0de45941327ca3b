"""A relay killed with SIGKILL and started again under the same relay id restores its sessions from
Redis on the same ports: audio resumes both ways. Without Redis the relay works as before."""

from __future__ import annotations

import asyncio
import json
import signal
import time

import grpc
import pytest
from redis import asyncio as aioredis

from tests.support.media_relay import RelayProcess, Stream
from tests.support.ports import free_port
from tests.support.redis_server import RedisProcess, start_redis
from trunkline.media import rtp
from trunkline.media.testing import HOST, Party, leg, rtp_packet
from trunkline.media.v1 import media_pb2, media_pb2_grpc

RELAY_ID = "media-0"
SESSION_KEY = f"trunkline:relay:{RELAY_ID}:session:call-1"
INDEX_KEY = f"trunkline:relay:{RELAY_ID}:sessions"


async def wait_until(check, what: str, timeout: float = 15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := await check():
            return result
        await asyncio.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}")


async def create(target: str, a_sdp: Party, b: Party) -> media_pb2.CreateSessionResponse:
    async with grpc.aio.insecure_channel(target) as channel:
        stub = media_pb2_grpc.MediaRelayStub(channel)
        return await stub.CreateSession(
            media_pb2.CreateSessionRequest(session_id="call-1", leg_a=leg(a_sdp), leg_b=leg(b)), timeout=5
        )


async def test_sessions_come_back_on_the_same_ports_after_sigkill(tmp_path):
    redis_server = start_redis(tmp_path / "redis")
    relay = RelayProcess(tmp_path, ["--relay-id", RELAY_ID, "--redis", redis_server.url]).start()
    redis = aioredis.Redis.from_url(redis_server.url)
    # A is behind NAT: its SDP names a_sdp, it really sends from `a`. The relay latches onto `a`.
    a, a_sdp, b = Party(), Party(), Party()
    try:
        created = await create(relay.target, a_sdp, b)
        port_a, port_b = created.leg_a.rtp_port, created.leg_b.rtp_port
        a_to_b, b_to_a = Stream(a, port_a, b, 0xA), Stream(b, port_b, a, 0xB)
        a_to_b.start()
        b_to_a.start()

        async def latched_in_redis():
            raw = await redis.get(SESSION_KEY)
            record = json.loads(raw) if raw else None
            return record if record and record["legs"][0]["latched_rtp"] == [HOST, a.port] else None

        record = await wait_until(latched_in_redis, "the latched address in the session's record")
        assert [leg["rtp_port"] for leg in record["legs"]] == [port_a, port_b]
        assert record["legs"][0]["remote_rtp"] == [HOST, a_sdp.port] and record["timeout"] == 60.0
        assert 0 < await redis.pttl(SESSION_KEY) <= 70_000
        assert await redis.zscore(INDEX_KEY, "call-1") > time.time()

        await asyncio.sleep(0.5)
        drain(a_sdp)  # what went there before A's first packet was latched
        killed_at = time.monotonic()
        relay.kill()
        relay.start()
        back_at = time.monotonic()
        await asyncio.sleep(2.0)
        await a_to_b.stop()
        await b_to_a.stop()

        gaps = {"A->B": a_to_b.longest_gap(), "B->A": b_to_a.longest_gap()}
        restart = back_at - killed_at
        print(f"relay restart took {restart:.2f} s; longest gap in received packets: "
              + ", ".join(f"{d} {g:.2f} s ({g * 50:.0f} packets)" for d, g in gaps.items()))  # fmt: skip
        # The gap is the restart (process start, on a loaded machine 2-5 s) plus how soon audio flows
        # again once the relay is back: that part is the relay's, and small.
        assert all(gap < restart + 1.5 for gap in gaps.values()), (restart, gaps)
        for stream, port in ((a_to_b, port_b), (b_to_a, port_a)):
            after = [(seq, source) for seq, when, source in stream.received if when > back_at]
            assert len(after) >= 80  # 2 s at 50/s, both ways
            assert {source for _, source in after} == {(HOST, port)}  # from the same relay port as before
            assert stream.missing_sent_after(back_at) == []  # everything sent once it is back arrives
        # The latch came back too: B's audio went on to where A really is, never to A's SDP address.
        assert await a_sdp.nothing(0.1)
        assert "1 session(s) restored from Redis on their ports, 0 dropped" in relay.output()

        async with grpc.aio.insecure_channel(relay.target) as channel:
            stub = media_pb2_grpc.MediaRelayStub(channel)
            stats = (await stub.GetSessionStats(media_pb2.GetSessionStatsRequest(session_id="call-1"))).stats
            assert stats.leg_a.rtp_peer == f"{HOST}:{a.port}" and stats.leg_a.received.packets >= 80
            await stub.DeleteSession(media_pb2.DeleteSessionRequest(session_id="call-1"))
        await wait_until(lambda: _gone(redis), "the record deleted with the session", timeout=5)
        assert relay.stop() == 0
    finally:
        if relay.proc and relay.proc.poll() is None:
            relay.proc.kill()
        await redis.aclose()
        redis_server.stop()
        for party in (a, a_sdp, b):
            party.close()


def drain(party: Party) -> None:
    while True:
        try:
            party.sock.recv(2048)
        except BlockingIOError:
            return


async def _gone(redis: aioredis.Redis) -> bool:
    return not await redis.exists(SESSION_KEY) and await redis.zscore(INDEX_KEY, "call-1") is None


async def relays_audio(target: str, session_id: str) -> float:
    """Create a session and pass a packet each way; returns how long CreateSession took."""
    a, b = Party(), Party()
    try:
        async with grpc.aio.insecure_channel(target) as channel:
            stub = media_pb2_grpc.MediaRelayStub(channel)
            started = time.monotonic()
            created = await stub.CreateSession(
                media_pb2.CreateSessionRequest(session_id=session_id, leg_a=leg(a), leg_b=leg(b)), timeout=5
            )
            took = time.monotonic() - started
        a.send(rtp_packet(1, 0, 1, b"to-b"), created.leg_a.rtp_port)
        assert (await b.recv())[0].endswith(b"to-b")
        b.send(rtp_packet(1, 0, 2, b"to-a"), created.leg_b.rtp_port)
        assert (await a.recv())[0].endswith(b"to-a")
        return took
    finally:
        a.close()
        b.close()


async def test_without_redis_the_relay_still_creates_sessions_and_writes_them_later(tmp_path):
    redis_port = free_port()  # nothing listens there yet
    url = f"redis://127.0.0.1:{redis_port}/0"
    relay = RelayProcess(tmp_path, ["--relay-id", RELAY_ID, "--redis", url]).start()
    redis_server = None
    try:
        assert "cannot read relay media-0's sessions from Redis" in relay.output()
        await relays_audio(relay.target, "call-1")  # not slowed: see the stalled-Redis test below
        redis_server = RedisProcess(redis_port, tmp_path / "redis").start()
        redis = aioredis.Redis.from_url(url)
        try:  # written once Redis answers (retried every second)
            record = await wait_until(
                lambda: redis.get(SESSION_KEY), "the record written after Redis came up"
            )
            assert json.loads(record)["session"] == "call-1"
        finally:
            await redis.aclose()
        assert relay.stop() == 0
    finally:
        if relay.proc and relay.proc.poll() is None:
            relay.proc.kill()
        if redis_server is not None:
            redis_server.stop()


async def test_a_stalled_redis_does_not_slow_session_creation(tmp_path):
    redis_server = start_redis(tmp_path / "redis")
    relay = RelayProcess(tmp_path, ["--relay-id", RELAY_ID, "--redis", redis_server.url]).start()
    assert redis_server.proc is not None
    try:
        await relays_audio(relay.target, "stalled-warm-up")  # the engine has started, the client connected
        redis_server.proc.send_signal(signal.SIGSTOP)  # connections open, nothing answers
        took = [await relays_audio(relay.target, f"stalled-{i}") for i in range(3)]
        assert max(took) < 0.2, took
        await wait_until(lambda: _logged(relay, "sessions go on"), "the write failure logged", timeout=5)
        redis_server.proc.send_signal(signal.SIGCONT)
        redis = aioredis.Redis.from_url(redis_server.url)
        try:
            keys = f"trunkline:relay:{RELAY_ID}:session:stalled-*"
            await wait_until(lambda: _count(redis, keys, 4), "the records written after the stall")
        finally:
            await redis.aclose()
        assert relay.stop() == 0
    finally:
        redis_server.proc.send_signal(signal.SIGCONT)
        if relay.proc and relay.proc.poll() is None:
            relay.proc.kill()
        redis_server.stop()


async def _count(redis: aioredis.Redis, pattern: str, want: int) -> bool:
    return len(await redis.keys(pattern)) == want


async def _logged(relay: RelayProcess, text: str) -> bool:
    return text in relay.output()


async def test_an_srtp_leg_keeps_its_keys_across_a_restart(tmp_path):
    redis_server = start_redis(tmp_path / "redis")
    relay = RelayProcess(tmp_path, ["--relay-id", RELAY_ID, "--redis", redis_server.url]).start()
    a, b = Party(), Party()  # A speaks SRTP, B plain RTP
    key_a = rtp.new_key()
    try:
        async with grpc.aio.insecure_channel(relay.target) as channel:
            crypto = media_pb2.Crypto(suite=rtp.SRTP_SUITE, key=rtp.encode_key(key_a))
            created = await media_pb2_grpc.MediaRelayStub(channel).CreateSession(
                media_pb2.CreateSessionRequest(
                    session_id="call-1", leg_a=leg(a, crypto=crypto), leg_b=leg(b)
                ),
                timeout=5,
            )
        a_protect = rtp.srtp_session(key_a, inbound=False)
        a_unprotect = rtp.srtp_session(rtp.decode_key(created.leg_a.crypto.key), inbound=True)
        port_a, port_b = created.leg_a.rtp_port, created.leg_b.rtp_port

        async def both_ways(first_seq: int) -> None:
            for seq in range(first_seq, first_seq + 5):
                packet = rtp_packet(seq, seq * 160, 0xA, b"a" * 160)
                a.send(a_protect.protect(packet), port_a)
                assert (await b.recv())[0] == packet
                packet = rtp_packet(seq, seq * 160, 0xB, b"b" * 160)
                b.send(packet, port_b)
                assert a_unprotect.unprotect((await a.recv())[0]) == packet

        await both_ways(1)
        redis = aioredis.Redis.from_url(redis_server.url)
        try:
            record = json.loads(await wait_until(lambda: redis.get(SESSION_KEY), "the session's record"))
        finally:
            await redis.aclose()
        assert record["legs"][0]["relay_key"] == created.leg_a.crypto.key
        assert record["legs"][0]["party_key"] == rtp.encode_key(key_a)
        relay.kill()
        relay.start()
        await both_ways(6)  # the same keys both ways, on the same ports
        assert relay.stop() == 0
    finally:
        if relay.proc and relay.proc.poll() is None:
            relay.proc.kill()
        redis_server.stop()
        a.close()
        b.close()
