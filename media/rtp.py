"""RTP/RTCP helpers of the packet path: receive statistics (RFC 3550) and SDES SRTP contexts.

Everything here runs per packet, so it stays small: one struct unpack per RTP packet and a few
integer operations. Nothing here raises on bad input; callers check lengths first.
"""

from __future__ import annotations

import base64
import binascii
import os
import struct

import pylibsrtp

RTP_HEADER = 12  # fixed RTP header, RFC 3550 5.1
RTCP_HEADER = 8  # RTCP common header + sender SSRC
VERSION_MASK, VERSION_2 = 0xC0, 0x80
SRTP_SUITE = "AES_CM_128_HMAC_SHA1_80"
SRTP_KEY_LEN = 30  # 16 bytes master key + 14 bytes master salt (RFC 4568 6.2.1)
_SEQ_TS_SSRC = struct.Struct("!HII")


def is_rtcp(data: memoryview | bytes) -> bool:
    """RTCP on a muxed port: payload type byte 192..223 (RFC 5761 4); RTP never uses those."""
    return 192 <= data[1] <= 223


def packet_ssrc(data: memoryview | bytes, rtcp: bool) -> int:
    """The sender SSRC: bytes 8-11 of RTP, 4-7 of RTCP."""
    offset = 4 if rtcp else 8
    return int.from_bytes(data[offset : offset + 4], "big")


class ReceiveStats:
    """Counters of what one party sent: packets, bytes, loss (RFC 3550 A.3), jitter (A.8)."""

    __slots__ = (
        "_base_seq", "_cycles", "_jitter", "_last_ts", "_lost_before", "_max_seq", "_rate",
        "_received", "_ssrc", "_transit", "bytes", "packets", "rtcp_packets",
    )  # fmt: skip

    def __init__(self, clock_rate: int) -> None:
        self.packets = self.bytes = self.rtcp_packets = 0
        self._rate = float(clock_rate)
        self._ssrc = -1
        self._base_seq = self._max_seq = self._cycles = self._received = self._lost_before = 0
        self._transit = 0.0
        self._jitter = 0.0
        self._last_ts = -1

    def set_clock_rate(self, clock_rate: int) -> None:
        self._rate = float(clock_rate)

    def on_rtp(self, data: memoryview, size: int, now: float) -> None:
        self.packets += 1
        self.bytes += size
        seq, ts, ssrc = _SEQ_TS_SSRC.unpack_from(data, 2)
        if ssrc != self._ssrc:  # a new source: loss is counted per source, then summed
            self._lost_before = self.lost
            self._ssrc, self._base_seq, self._max_seq, self._cycles, self._received = ssrc, seq, seq, 0, 0
            self._last_ts = -1
        self._received += 1
        delta = (seq - self._max_seq) & 0xFFFF
        if 0 < delta < 0x8000:  # in order (maybe after a gap); older packets leave max_seq alone
            if seq < self._max_seq:
                self._cycles += 0x10000
            self._max_seq = seq
        if ts == self._last_ts:
            # Same timestamp again: RFC 4733 events and video frames; their arrival spacing is not
            # network jitter, and counting it would inflate the figure.
            return
        transit = now * self._rate - ts
        if self._last_ts >= 0:
            d = abs((transit - self._transit + 2**31) % 2**32 - 2**31)  # timestamps wrap at 2^32
            self._jitter += (d - self._jitter) / 16.0
        self._transit = transit
        self._last_ts = ts

    @property
    def lost(self) -> int:
        if self._ssrc < 0:
            return self._lost_before
        expected = self._cycles + self._max_seq - self._base_seq + 1
        return self._lost_before + expected - self._received

    @property
    def jitter_ms(self) -> float:
        return self._jitter / self._rate * 1000.0 if self._rate else 0.0


def decode_key(key_b64: str) -> bytes:
    """The 30-byte master key+salt of an SDES inline key; ValueError when it is not one."""
    try:
        key = base64.b64decode(key_b64, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("SRTP key is not base64") from None
    if len(key) != SRTP_KEY_LEN:
        raise ValueError(f"SRTP key must be {SRTP_KEY_LEN} bytes (key + salt), got {len(key)}")
    return key


def encode_key(key: bytes) -> str:
    return base64.b64encode(key).decode("ascii")


def new_key() -> bytes:
    return os.urandom(SRTP_KEY_LEN)


def srtp_session(key: bytes, inbound: bool) -> pylibsrtp.Session:
    """An SRTP context for any SSRC in one direction (a party may change SSRC mid-call)."""
    policy = pylibsrtp.Policy(
        key=key,
        ssrc_type=pylibsrtp.Policy.SSRC_ANY_INBOUND if inbound else pylibsrtp.Policy.SSRC_ANY_OUTBOUND,
        srtp_profile=pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80,
    )
    return pylibsrtp.Session(policy=policy)
