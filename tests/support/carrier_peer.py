"""A carrier as the edge meets it, on the test UA: a registrar that challenges REGISTER (digest,
401) and then binds the Contact, gateways that answer OPTIONS and INVITE or fall silent, and the
inbound INVITE it sends to the Contact it holds."""

from __future__ import annotations

import time
from dataclasses import dataclass

from trunkline.core.models import DigestAlgorithm
from trunkline.edge.digest import DigestAuthenticator, parse_credentials
from trunkline.sip.message import Request
from trunkline.sip.stack import Incoming
from trunkline.sip.ua import UserAgent

REALM = "carrier.test"


@dataclass(frozen=True)
class Registered:
    """A REGISTER the registrar accepted: when, from which edge (its Via), and the binding."""

    at: float
    via: str  # host:port of the top Via: the edge process that sent it
    call_id: str
    cseq: int
    contact: str
    expires: int


class CarrierPeer(UserAgent):
    def __init__(
        self,
        host: str = "127.0.0.1",
        username: str = "",
        password: str = "",
        grant: int = 3600,
        algorithm: DigestAlgorithm = DigestAlgorithm.SHA256,
    ) -> None:
        super().__init__(host)
        self.username, self.password, self.grant, self.algorithm = username, password, grant, algorithm
        self.auth = DigestAuthenticator(b"carrier-test-key")
        self.registered: list[Registered] = []
        self.challenged = 0
        self.options = 0
        self.invites = 0
        self.silent = False  # answer nothing at all (a dead gateway)
        self.refuse_calls: int | None = None  # answer INVITEs with this status (OPTIONS still 200)

    def contact(self) -> str | None:
        """The Contact the last accepted REGISTER bound (None before any)."""
        return self.registered[-1].contact if self.registered else None

    def _on_request(self, inc: Incoming) -> None:
        method = inc.request.method
        if self.silent:
            if method not in ("ACK",):
                self.stack.discard(inc.key)
            return
        if method == "OPTIONS":
            self.options += 1
        elif method == "INVITE":
            self.invites += 1
        if method == "REGISTER":
            self._register(inc.request)
            return
        if method == "INVITE" and self.refuse_calls is not None:
            self._respond(inc.request.create_response(self.refuse_calls, to_tag="refused"))
            return
        super()._on_request(inc)

    def _register(self, request: Request) -> None:
        header = request.get("Authorization")
        verdict = None
        if header is not None:
            verdict = self.auth.verify(
                parse_credentials(header), "REGISTER", str(request.uri), REALM, [self.algorithm],
                lambda user: self.password if user == self.username else None,
            )  # fmt: skip
        if verdict is None or not verdict.ok:
            self.challenged += 1
            response = request.create_response(401, to_tag="reg")
            response.add("WWW-Authenticate", self.auth.challenges(REALM, [self.algorithm])[0])
            self._respond(response)
            return
        contact = request.contact[0]
        asked = int(request.get("Expires") or "3600")
        granted = min(asked, self.grant)
        via = request.top_via
        self.registered.append(
            Registered(
                time.monotonic(),
                f"{via.host}:{via.port}",
                request.call_id,
                request.cseq.seq,
                str(contact.uri),
                granted,
            )
        )
        response = request.create_response(200, to_tag="reg")
        response.add("Contact", f"<{contact.uri}>;expires={granted}")
        self._respond(response)
