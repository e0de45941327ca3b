"""Dialogs (RFC 3261 section 12): id, route set, CSeq spaces, remote target, in-dialog requests."""

from __future__ import annotations

from dataclasses import dataclass, field

from trunkline.sip.errors import LocalProtocolError, SipParseError
from trunkline.sip.headers import NameAddr, Via, parse_name_addr
from trunkline.sip.ids import new_branch
from trunkline.sip.message import Request, Response
from trunkline.sip.uri import SipUri, Uri, parse_uri

TARGET_REFRESH = frozenset({"INVITE", "UPDATE", "SUBSCRIBE", "NOTIFY", "REFER"})


@dataclass
class Dialog:
    call_id: str
    local_tag: str
    remote_tag: str
    local: NameAddr  # our From in requests we send (without tag)
    remote: NameAddr
    remote_target: Uri
    route_set: list[NameAddr] = field(default_factory=list)
    local_seq: int = 0
    remote_seq: int | None = None

    @property
    def id(self) -> tuple[str, str, str]:
        return (self.call_id, self.local_tag, self.remote_tag)

    @classmethod
    def from_uac(cls, request: Request, response: Response) -> Dialog:
        """UAC side, from a 2xx/1xx-with-tag to our request (12.1.2): Record-Route reversed."""
        if response.to.tag is None or response.from_.tag is None:
            raise SipParseError("Bad Request: dialog-creating response without tags")
        if not response.contact:
            raise SipParseError("Bad Request: dialog-creating response without Contact")
        return cls(
            request.call_id,
            response.from_.tag,
            response.to.tag,
            NameAddr(request.from_.uri, request.from_.display),
            NameAddr(response.to.uri, response.to.display),
            response.contact[0].uri,
            [NameAddr(r.uri, r.display, dict(r.params)) for r in reversed(response.record_route)],
            request.cseq.seq,
            None,
        )

    @classmethod
    def from_uas(cls, request: Request, response: Response) -> Dialog:
        """UAS side, from the request and our response carrying the To tag (12.1.1)."""
        if response.to.tag is None or request.from_.tag is None or not request.contact:
            raise SipParseError("Bad Request: dialog-creating request without From tag or Contact")
        return cls(
            request.call_id,
            response.to.tag,
            request.from_.tag,
            NameAddr(request.to.uri, request.to.display),
            NameAddr(request.from_.uri, request.from_.display),
            request.contact[0].uri,
            [NameAddr(r.uri, r.display, dict(r.params)) for r in request.record_route],
            0,
            request.cseq.seq,
        )

    def to_record(self) -> dict[str, object]:
        """Plain data (JSON-safe) from which `from_record` rebuilds this dialog in another process."""
        return {
            "call_id": self.call_id, "local_tag": self.local_tag, "remote_tag": self.remote_tag,
            "local": str(self.local), "remote": str(self.remote), "remote_target": str(self.remote_target),
            "route_set": [str(r) for r in self.route_set], "local_seq": self.local_seq,
            "remote_seq": self.remote_seq,
        }  # fmt: skip

    @classmethod
    def from_record(cls, data: dict[str, object]) -> Dialog:
        """The dialog `to_record` described; ValueError when the record is not one."""
        try:
            routes = data["route_set"]
            remote_seq = data["remote_seq"]
            assert isinstance(routes, list) and (remote_seq is None or isinstance(remote_seq, int))
            return cls(
                str(data["call_id"]), str(data["local_tag"]), str(data["remote_tag"]),
                parse_name_addr(str(data["local"])), parse_name_addr(str(data["remote"])),
                parse_uri(str(data["remote_target"])), [parse_name_addr(str(r)) for r in routes],
                int(str(data["local_seq"])), remote_seq,
            )  # fmt: skip
        except (KeyError, AssertionError, SipParseError) as exc:
            raise ValueError(f"not a dialog record: {exc!r}") from None

    def receive_request(self, request: Request) -> None:
        """Check the remote CSeq (12.2.2, out of order -> 500) and refresh the target."""
        seq = request.cseq.seq
        if request.method not in ("ACK", "CANCEL"):
            if self.remote_seq is not None and seq <= self.remote_seq:
                raise SipParseError("Server Internal Error: CSeq out of order", 500)
            self.remote_seq = seq
        if request.method in TARGET_REFRESH and request.contact:
            self.remote_target = request.contact[0].uri

    def receive_response(self, request: Request, response: Response) -> None:
        """A 2xx to a target refresh request updates the remote target (12.2.1.2)."""
        if 200 <= response.status < 300 and request.method in TARGET_REFRESH and response.contact:
            self.remote_target = response.contact[0].uri

    def create_request(
        self, method: str, via: Via, contact: NameAddr | None = None, cseq: int | None = None
    ) -> Request:
        """An in-dialog request (12.2.1.1) with loose (`;lr`) or strict routing."""
        if method == "CANCEL":
            raise LocalProtocolError("CANCEL is built from its INVITE (transaction.build_cancel)")
        if cseq is None:
            if method != "ACK":
                self.local_seq += 1
            cseq = self.local_seq
        routes = list(self.route_set)
        target: Uri = self.remote_target
        first = routes[0].uri if routes else None
        if isinstance(first, SipUri) and "lr" not in first.params:
            # Strict routing: the first route becomes the Request-URI, the target goes last.
            target = first
            routes = [*routes[1:], NameAddr(self.remote_target)]
        req = Request(method, target)
        via = Via(via.transport, via.host, via.port, {**via.params, "branch": new_branch()}, via.protocol)
        req.add("Via", via)
        for route in routes:
            req.add("Route", str(route))
        req.add("Max-Forwards", "70")
        req.add("From", str(NameAddr(self.local.uri, self.local.display, {"tag": self.local_tag})))
        req.add("To", str(NameAddr(self.remote.uri, self.remote.display, {"tag": self.remote_tag})))
        req.add("Call-ID", self.call_id)
        req.add("CSeq", f"{cseq} {method}")
        if contact is not None:
            req.add("Contact", str(contact))
        return req
