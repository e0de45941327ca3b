"""Many datagrams in one system call: recvmmsg(2) through ctypes on libc, into buffers allocated once.

The standard library has no recvmmsg (nor sendmmsg); no maintained package on PyPI offers it either
(bench/README-media.md, "System-call batching (recvmmsg)"). `AVAILABLE` is False where libc lacks
it (not Linux): the engine then reads one datagram per readiness event, as it always does at call
rates. sendmmsg is left out on purpose: measured, it relayed no more per CPU-second than one `sendto`
per packet, and cost more for a batch of one.
"""

from __future__ import annotations

import ctypes
import socket
import struct

MSG_DONTWAIT = 0x40
# Room per datagram: any UDP payload fits, as in the engine's 64 KiB `recvfrom_into` buffer; the odd
# 64 bytes keep the slots' starts off the same cache set.
SLOT = 65536 + 64
NAME = 32  # room per source address: a sockaddr_in6 (28 bytes), rounded up


class IoVec(ctypes.Structure):
    _fields_ = (("base", ctypes.c_void_p), ("len", ctypes.c_size_t))


class MsgHdr(ctypes.Structure):
    _fields_ = (
        ("name", ctypes.c_void_p),
        ("namelen", ctypes.c_uint32),
        ("iov", ctypes.c_void_p),
        ("iovlen", ctypes.c_size_t),
        ("control", ctypes.c_void_p),
        ("controllen", ctypes.c_size_t),
        ("flags", ctypes.c_int),
    )


class MMsgHdr(ctypes.Structure):
    _fields_ = (("hdr", MsgHdr), ("len", ctypes.c_uint))


_HDR = ctypes.sizeof(MMsgHdr)
_LEN = MMsgHdr.len.offset

try:
    # PyDLL keeps the GIL: the call never blocks (MSG_DONTWAIT), and releasing it costs time. No
    # argtypes: converting through them cost ~350 ns a call; the arguments are ints, None and a
    # c_void_p made once.
    _recvmmsg = ctypes.PyDLL(None).recvmmsg
    _recvmmsg.restype = ctypes.c_int
    AVAILABLE = True
except AttributeError:
    AVAILABLE = False

_PORT = struct.Struct("!H")
_FLOW = struct.Struct("!I")
_SCOPE = struct.Struct("=I")
_FAMILY = struct.Struct("=H")


def _address_of(buffer: bytearray) -> int:
    return ctypes.addressof((ctypes.c_char * len(buffer)).from_buffer(buffer))


class Receiver:
    """Up to `count` datagrams per `receive`: datagram i is `view[i * SLOT : i * SLOT + size(i)]`
    and came from `source(i)`, as `recvfrom` would report it."""

    def __init__(self, family: int, count: int) -> None:
        self.family, self.count = family, count
        self.namelen = 28 if family == socket.AF_INET6 else 16
        self.buf = bytearray(count * SLOT)
        self.view = memoryview(self.buf)
        self.names = bytearray(count * NAME)
        self._names = memoryview(self.names)
        self._iovs = (IoVec * count)()
        self._hdrs_buf = bytearray(count * _HDR)
        hdrs = (MMsgHdr * count).from_buffer(self._hdrs_buf)
        buf_at, names_at = _address_of(self.buf), _address_of(self.names)
        for i in range(count):
            self._iovs[i].base, self._iovs[i].len = buf_at + i * SLOT, SLOT
            hdrs[i].hdr.name, hdrs[i].hdr.namelen = names_at + i * NAME, NAME
            hdrs[i].hdr.iov, hdrs[i].hdr.iovlen = ctypes.addressof(self._iovs[i]), 1
        self._hdrs = hdrs
        self._at = ctypes.c_void_p(ctypes.addressof(hdrs))
        # msg_len of datagram i: sizes[i * stride + first]
        self.sizes = memoryview(self._hdrs_buf).cast("I")
        self.stride, self.first = _HDR // 4, _LEN // 4
        self._sources: dict[bytes, tuple[object, ...]] = {}
        self._blocks: dict[tuple[object, ...], bytes] = {}

    def receive(self, fd: int) -> int:
        """The datagrams now in the slots: 0 when none was queued, or on an (ICMP) error."""
        got: int = _recvmmsg(fd, self._at, self.count, MSG_DONTWAIT, None)
        return got if got > 0 else 0

    def size(self, i: int) -> int:
        return int(self.sizes[i * self.stride + self.first])

    def all_from(self, address: tuple[object, ...] | None, got: int) -> bool:
        """Whether datagrams 0..got-1 all came from `address` (the kernel leaves the rest of each
        name slot zero): one comparison for the batch instead of a decoded address per datagram."""
        if address is None:
            return False
        block = self._blocks.get(address)
        if block is None:
            if len(self._blocks) >= 4096:  # bounded: a lock per leg, relearnt now and then
                self._blocks.clear()
            raw = encode(self.family, address)
            block = self._blocks[address] = (raw + bytes(NAME - len(raw))) * self.count
        size = got * NAME
        return self.names[:size] == block[:size]

    def source(self, i: int) -> tuple[object, ...]:
        """Where datagram `i` came from, as `recvfrom` reports it."""
        at = i * NAME
        raw = bytes(self._names[at : at + self.namelen])
        address = self._sources.get(raw)
        if address is None:
            if len(self._sources) >= 4096:  # bounded: a spray of sources cannot grow it
                self._sources.clear()
            address = self._sources[raw] = decode(self.family, raw)
        return address


def decode(family: int, raw: bytes) -> tuple[object, ...]:
    """A sockaddr_in/sockaddr_in6 as CPython's `recvfrom` reports it."""
    port = _PORT.unpack_from(raw, 2)[0]
    if family == socket.AF_INET:
        return (socket.inet_ntop(socket.AF_INET, raw[4:8]), port)
    flow, scope = _FLOW.unpack_from(raw, 4)[0], _SCOPE.unpack_from(raw, 24)[0]
    host = socket.inet_ntop(socket.AF_INET6, raw[8:24])
    if scope:  # CPython names the zone ("fe80::1%eth0"), as getnameinfo does
        host = socket.getnameinfo((host, port, flow, scope), socket.NI_NUMERICHOST | socket.NI_NUMERICSERV)[0]
    return (host, port, flow, scope)


def encode(family: int, address: tuple[object, ...]) -> bytes:
    """The sockaddr the kernel reports for `address` (a `recvfrom` tuple)."""
    host, port = str(address[0]).partition("%")[0], _int(address[1])
    if family == socket.AF_INET:
        packed = socket.inet_pton(socket.AF_INET, host)
        return _FAMILY.pack(socket.AF_INET) + _PORT.pack(port) + packed + bytes(8)
    flow = _int(address[2]) if len(address) > 2 else 0
    scope = _int(address[3]) if len(address) > 3 else 0
    packed = socket.inet_pton(socket.AF_INET6, host)
    return _FAMILY.pack(socket.AF_INET6) + _PORT.pack(port) + _FLOW.pack(flow) + packed + _SCOPE.pack(scope)


def _int(value: object) -> int:
    if not isinstance(value, int):
        raise TypeError(f"{value!r} is not a port, flow or scope")
    return value
