"""Redis with a password (requirepass) and over TLS only (tls-port, no plaintext port), with real
redis-server processes: the right password and CA work, from the client and from `trunkline edge`,
`media` and `up` given --redis-password-file and --redis-ca; no password, a wrong one, plaintext to
the TLS port and a server certificate the client does not trust are refused."""

from __future__ import annotations

import argparse
import asyncio
import subprocess
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import grpc
import pytest

from tests.support.certs import write_self_signed
from tests.support.media_relay import RelayProcess
from tests.support.ports import free_port
from tests.support.redis_server import RedisProcess
from tests.support.trunkline_up import BIN, Up, manifests
from tests.support.wait import wait_for
from trunkline.core.state_redis import (
    RedisStore,
    RedisTarget,
    StoreUnavailable,
    add_redis_arguments,
    redis_target,
)
from trunkline.media.v1 import media_pb2, media_pb2_grpc

pytestmark = pytest.mark.integration

PASSWORD = "s3cret-r3dis"


class TlsRedis:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.cert, key = workdir / "redis-cert.pem", workdir / "redis-key.pem"
        write_self_signed(self.cert, key)
        self.password_file = workdir / "password"
        self.password_file.write_text(PASSWORD + "\n")  # as a Secret volume may hold it
        self.server = RedisProcess(free_port(), workdir / "server", password=PASSWORD, tls=(self.cert, key))

    @property
    def flags(self) -> list[str]:
        return ["--redis", self.server.url, "--redis-password-file", str(self.password_file),
                "--redis-ca", str(self.cert)]  # fmt: skip

    def target(self) -> RedisTarget:
        return RedisTarget(self.server.url, PASSWORD, str(self.cert))


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsRedis]:
    redis = TlsRedis(tmp_path_factory.mktemp("redis-tls"))
    redis.server.start()
    try:
        yield redis
    finally:
        redis.server.stop()


async def works(target: RedisTarget) -> bool:
    """One write and one read through the store; False when Redis refuses or cannot be reached."""
    store = RedisStore.from_target(target, timeout=5)
    try:
        await store.first_use("probe", 30)
        return await store.ping()
    except StoreUnavailable:
        return False
    finally:
        await store.close()


async def test_auth_works_with_the_password_only(tmp_path: Path) -> None:
    server = RedisProcess(free_port(), tmp_path, password=PASSWORD).start()
    try:
        assert await works(RedisTarget(server.url, PASSWORD))
        assert not await works(RedisTarget(server.url))
        assert not await works(RedisTarget(server.url, "wrong"))
    finally:
        server.stop()


async def test_tls_works_with_the_ca_and_password_only(tls_redis: TlsRedis, tmp_path: Path) -> None:
    assert await works(tls_redis.target())
    url = tls_redis.server.url
    assert not await works(RedisTarget(url, None, str(tls_redis.cert)))  # no AUTH
    assert not await works(RedisTarget(url.replace("rediss://", "redis://"), PASSWORD))  # plaintext
    other_ca = tmp_path / "other.pem"
    write_self_signed(other_ca, tmp_path / "other-key.pem")
    assert not await works(RedisTarget(url, PASSWORD, str(other_ca)))  # a server we do not trust


async def test_the_flags_read_the_password_from_a_file(tls_redis: TlsRedis, tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    add_redis_arguments(parser, "store")
    target = redis_target(parser.parse_args(tls_redis.flags))
    assert target == tls_redis.target()
    assert await works(target)
    with pytest.raises(ValueError, match="--redis-password-file"):
        redis_target(
            parser.parse_args([*tls_redis.flags[:2], "--redis-password-file", str(tmp_path / "none")])
        )
    with pytest.raises(ValueError, match="rediss://"):
        redis_target(
            parser.parse_args(["--redis", "redis://127.0.0.1:1/0", "--redis-ca", str(tls_redis.cert)])
        )


async def test_edge_and_relay_use_redis_over_tls_with_auth(tls_redis: TlsRedis, tmp_path: Path) -> None:
    client = tls_redis.target().connect(timeout=5)
    edge = Up(tmp_path / "edge", manifests(free_port(), free_port()),
              [*tls_redis.flags, "--edge-id", "edge-tls"], command="edge").start()  # fmt: skip
    relay = RelayProcess(tmp_path / "relay", [*tls_redis.flags, "--relay-id", "relay-tls"]).start()
    try:
        # The edge proves it lives in Redis (its keep-alive), which takes AUTH over TLS.
        async def edge_alive() -> bool:
            owners = await client.zrange("trunkline:owners", 0, -1)  # edge-tls/<this process>
            return any(owner.startswith(b"edge-tls/") for owner in owners)

        await wait_async(edge_alive, "the edge's keep-alive in Redis", edge.output)
        async with grpc.aio.insecure_channel(relay.target) as channel:
            stub = media_pb2_grpc.MediaRelayStub(channel)
            await stub.CreateSession(media_pb2.CreateSessionRequest(session_id="call-tls"), timeout=10)

        async def recorded() -> bool:
            return bool(await client.exists("trunkline:relay:relay-tls:session:call-tls"))

        await wait_async(recorded, "the relay's session record in Redis", relay.output)
    finally:
        relay.stop()
        edge.stop()
        await client.aclose()


async def test_a_wrong_password_file_keeps_the_edge_out(tls_redis: TlsRedis, tmp_path: Path) -> None:
    """The edge starts (Redis trouble is never fatal) but cannot write: no keep-alive, a log line."""
    wrong = tmp_path / "wrong"
    wrong.write_text("not-it")
    flags = ["--redis", tls_redis.server.url, "--redis-password-file", str(wrong),
             "--redis-ca", str(tls_redis.cert), "--edge-id", "edge-wrong"]  # fmt: skip
    edge = Up(tmp_path / "edge", manifests(free_port(), free_port()), flags, command="edge").start()
    try:
        refused = ("store keep-alive failed", "AuthenticationError")
        wait_for(lambda: all(text in edge.output() for text in refused), "the edge logging Redis's refusal")
    finally:
        edge.stop()
    client = tls_redis.target().connect(timeout=5)
    try:
        assert await client.zscore("trunkline:owners", "edge-wrong") is None
    finally:
        await client.aclose()


async def test_up_uses_redis_over_tls_with_auth(tls_redis: TlsRedis, tmp_path: Path) -> None:
    """`trunkline up --redis` takes the same --redis-password-file and --redis-ca as the edge."""
    client = tls_redis.target().connect(timeout=5)
    up = Up(tmp_path / "up", manifests(free_port(), free_port()), tls_redis.flags).start()
    try:

        async def keeping_alive() -> bool:  # the embedded edge's keep-alive: AUTH over TLS worked
            return bool(await client.zcard("trunkline:owners"))

        await wait_async(keeping_alive, "up's keep-alive in Redis", up.output)
    finally:
        up.stop()
        await client.aclose()
    missing = subprocess.run(
        [BIN, "up", "-f", str(tmp_path / "up" / "manifests.yaml"), "--sip-listen", f"127.0.0.1:{free_port()}",
         "--redis", tls_redis.server.url, "--redis-password-file", str(tmp_path / "none")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert missing.returncode == 1 and "--redis-password-file" in missing.stderr, missing.stderr


async def wait_async(
    check: Callable[[], Awaitable[bool]], what: str, output: Callable[[], str], timeout: float = 30.0
) -> None:
    """Poll an async `check` until true; fail with `what` and the process's log after `timeout` s."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await check():
        assert loop.time() < deadline, f"timed out waiting for {what}:\n{output()}"
        await asyncio.sleep(0.2)
