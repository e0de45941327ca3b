"""grpc's asyncio client reports INTERNAL when a write races the server's end of a stream
(grpc/grpc#36066), losing the relay's status: the edge reads that as the relay ending the stream
(UNAVAILABLE: the caller may try another relay); any other status is kept."""

from __future__ import annotations

import grpc
from grpc.aio import AioRpcError, Metadata

from trunkline.edge.relay_stream import _stream_error

WRITE_FAILED = 'Failed "execute_batch": (<grpc._cython.cygrpc.SendMessageOperation object at 0x7f>,)'


def ended(code: grpc.StatusCode, details: str, debug: str) -> AioRpcError:
    return AioRpcError(code, Metadata(), Metadata(), details, debug)


def test_a_write_that_failed_as_the_stream_ended_reads_unavailable() -> None:
    error = _stream_error(ended(grpc.StatusCode.INTERNAL, "Internal error from Core", WRITE_FAILED))
    assert error.code is grpc.StatusCode.UNAVAILABLE
    assert "ended the Sessions stream" in error.details


def test_the_relay_s_own_status_is_kept() -> None:
    for code in (grpc.StatusCode.INTERNAL, grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNIMPLEMENTED):
        relay_said = 'UNKNOWN:Error received from peer {grpc_message:"Failed \\"execute_batch\\""}'
        error = _stream_error(ended(code, "from the relay", relay_said))
        assert (error.code, error.details) == (code, "from the relay")
