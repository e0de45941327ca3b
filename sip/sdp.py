"""SDP (RFC 8866) as an edge needs it: parse, rewrite addresses/ports/codecs/crypto, serialize.

    session-description = version-field origin-field session-name-field ... *media-description
    media-field  = %s"m" "=" media SP port ["/" integer] SP proto 1*(SP fmt) CRLF
    origin-field = %s"o" "=" username SP sess-id SP sess-version SP nettype SP addrtype SP unicast-address
    connection-field = %s"c" "=" nettype SP addrtype SP connection-address
    a=rtpmap:<payload type> <encoding name>/<clock rate>[/<channels>]        (RFC 8866 6.6)
    a=crypto:<tag> <crypto-suite> <key-params> [<session-params>]             (RFC 4568 9.1)

Lines are kept in order as (type, value) pairs, so anything not interpreted passes through unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from trunkline.sip.errors import SipParseError

DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")
# Static payload types (RFC 3551) that may be offered without an rtpmap.
STATIC_PT = {"0": ("PCMU", 8000), "3": ("GSM", 8000), "4": ("G723", 8000), "8": ("PCMA", 8000),
             "9": ("G722", 8000), "18": ("G729", 8000)}  # fmt: skip


@dataclass(slots=True)
class Codec:
    pt: str
    name: str
    rate: int
    channels: int | None = None
    fmtp: str | None = None


class _Lines:
    """Shared attribute helpers over an ordered list of (type, value) lines."""

    lines: list[tuple[str, str]]

    def get(self, kind: str) -> str | None:
        return next((v for k, v in self.lines if k == kind), None)

    def set(self, kind: str, value: str | None) -> None:
        """Replace the first `kind` line (removing the others); None removes them all."""
        idx = [i for i, (k, _) in enumerate(self.lines) if k == kind]
        for i in reversed(idx[1:]):
            del self.lines[i]
        if value is None:
            if idx:
                del self.lines[idx[0]]
        elif idx:
            self.lines[idx[0]] = (kind, value)
        else:
            self.lines.append((kind, value))

    def attributes(self, name: str) -> list[str]:
        """Values of `a=name:value` (or "" for a property attribute `a=name`)."""
        out = []
        for k, v in self.lines:
            if k == "a":
                n, _, val = v.partition(":")
                if n == name:
                    out.append(val)
        return out

    def has_attribute(self, name: str) -> bool:
        return bool(self.attributes(name))

    def remove_attributes(self, name: str) -> None:
        self.lines[:] = [(k, v) for k, v in self.lines if not (k == "a" and v.partition(":")[0] == name)]

    def add_attribute(self, name: str, value: str | None = None) -> None:
        self.lines.append(("a", name if value is None else f"{name}:{value}"))

    @property
    def connection_address(self) -> str | None:
        c = self.get("c")
        return c.split()[2].split("/")[0] if c and len(c.split()) >= 3 else None

    def set_connection(self, address: str) -> None:
        self.set("c", f"IN {'IP6' if ':' in address else 'IP4'} {address}")

    @property
    def direction(self) -> str | None:
        return next((v for k, v in self.lines if k == "a" and v in DIRECTIONS), None)

    @direction.setter
    def direction(self, value: str | None) -> None:
        self.lines[:] = [(k, v) for k, v in self.lines if not (k == "a" and v in DIRECTIONS)]
        if value is not None:
            self.add_attribute(value)


@dataclass(slots=True)
class SdpMedia(_Lines):
    kind: str
    port: int
    proto: str
    fmts: list[str]
    port_count: int | None = None
    lines: list[tuple[str, str]] = field(default_factory=list)  # lines after m=, in order

    @property
    def codecs(self) -> list[Codec]:
        rtpmap: dict[str, tuple[str, int, int | None]] = {}
        for value in self.attributes("rtpmap"):
            pt, _, enc = value.partition(" ")
            parts = enc.split("/")
            if len(parts) >= 2 and parts[1].isdigit():
                rtpmap[pt] = (
                    parts[0],
                    int(parts[1]),
                    int(parts[2]) if len(parts) > 2 and parts[2].isdigit() else None,
                )
        fmtp = dict(v.partition(" ")[::2] for v in self.attributes("fmtp"))
        out = []
        for pt in self.fmts:
            name, rate, ch = rtpmap.get(pt) or (*STATIC_PT.get(pt, ("", 0)), None)
            out.append(Codec(pt, name, rate, ch, fmtp.get(pt)))
        return out

    def keep_codecs(self, names: list[str]) -> None:
        """Keep only payload types whose encoding name is in `names` (case-insensitive) - plus
        telephone-event - in the order offered, dropping their rtpmap/fmtp/rtcp-fb lines."""
        wanted = {n.lower() for n in names} | {"telephone-event"}
        keep = [c.pt for c in self.codecs if c.name.lower() in wanted]
        dropped = set(self.fmts) - set(keep)
        self.fmts = keep

        def refers_to_dropped(k: str, v: str) -> bool:
            name, _, rest = v.partition(":")
            return k == "a" and name in ("rtpmap", "fmtp", "rtcp-fb") and rest.partition(" ")[0] in dropped

        self.lines[:] = [(k, v) for k, v in self.lines if not refers_to_dropped(k, v)]

    @property
    def rtcp_port(self) -> int | None:
        vals = self.attributes("rtcp")
        return int(vals[0].split()[0]) if vals and vals[0].split()[0].isdigit() else None

    @property
    def rtcp_mux(self) -> bool:
        return self.has_attribute("rtcp-mux")

    @property
    def crypto(self) -> list[str]:
        return self.attributes("crypto")

    @crypto.setter
    def crypto(self, values: list[str]) -> None:
        self.remove_attributes("crypto")
        for v in values:
            self.add_attribute("crypto", v)

    def m_line(self) -> str:
        port = f"{self.port}/{self.port_count}" if self.port_count is not None else str(self.port)
        return " ".join([self.kind, port, self.proto, *self.fmts])


@dataclass(slots=True)
class SessionDescription(_Lines):
    lines: list[tuple[str, str]] = field(default_factory=list)  # session-level lines, v= first
    media: list[SdpMedia] = field(default_factory=list)

    @property
    def origin(self) -> list[str]:
        """o= fields: username, sess-id, sess-version, nettype, addrtype, address."""
        return (self.get("o") or "").split()

    def set_origin_address(self, address: str) -> None:
        o = self.origin
        if len(o) == 6:
            o[4], o[5] = ("IP6" if ":" in address else "IP4"), address
            self.set("o", " ".join(o))

    def bump_version(self) -> None:
        o = self.origin
        if len(o) == 6 and o[2].isdigit():
            o[2] = str(int(o[2]) + 1)
            self.set("o", " ".join(o))

    def to_bytes(self) -> bytes:
        out = [f"{k}={v}" for k, v in self.lines]
        for m in self.media:
            out.append(f"m={m.m_line()}")
            out += [f"{k}={v}" for k, v in m.lines]
        out.append("")
        return "\r\n".join(out).encode("utf-8", "surrogateescape")

    def __bytes__(self) -> bytes:
        return self.to_bytes()


def parse_sdp(data: bytes) -> SessionDescription:
    """Parse an SDP body; raises SipParseError(400) when it is not SDP (the peer's error)."""
    text = data.decode("utf-8", "surrogateescape")
    sd = SessionDescription()
    current: _Lines = sd
    for line in text.replace("\r\n", "\n").split("\n"):
        if not line:
            continue
        if len(line) < 2 or line[1] != "=" or not line[0].isalpha():
            raise SipParseError("Bad Request: malformed SDP line")
        kind, value = line[0], line[2:]
        if kind == "m":
            parts = value.split()
            if len(parts) < 4:
                raise SipParseError("Bad Request: malformed SDP m= line")
            port, _, count = parts[1].partition("/")
            if not port.isdigit() or int(port) > 65535 or (count and not count.isdigit()):
                raise SipParseError("Bad Request: malformed SDP port")
            media = SdpMedia(parts[0], int(port), parts[2], parts[3:], int(count) if count else None)
            sd.media.append(media)
            current = media
        else:
            current.lines.append((kind, value))
    if not sd.lines or sd.lines[0] != ("v", "0"):
        raise SipParseError("Bad Request: SDP must start with v=0")
    return sd
