"""Digest authentication of requests (RFC 3261 22, RFC 8760), lockout of sources that keep failing,
and REGISTER (authenticated, then handed to the registrar)."""

from __future__ import annotations

import logging

from trunkline.core.logs import event
from trunkline.core.models import Trunk
from trunkline.edge.context import EdgeContext
from trunkline.edge.digest import DigestError, Outcome, parse_credentials
from trunkline.edge.legs import new_tag, response_for, user_of
from trunkline.edge.registrar import NatSource, register
from trunkline.sip.errors import SipParseError
from trunkline.sip.stack import Incoming

log = logging.getLogger("trunkline.edge")


async def authenticate(ctx: EdgeContext, inc: Incoming, header: str, status: int) -> tuple[Trunk, str] | None:
    """(trunk, username) for a request that proved itself, else None after answering it."""
    req, source, options = inc.request, inc.addr[0], ctx.options
    failures = await ctx.store.auth_failures(source, options.auth_window)
    if failures >= options.silence_after:
        return None  # a source that keeps failing gets no more answers for a while
    if failures >= options.lockout_after:
        await ctx.store.note_auth_failure(source, options.auth_window)  # hammering counts too
        ctx.answer(inc, 403, "Forbidden (too many failed authentications)")
        return None
    raw = req.get(header)
    username_hint = user_of(req.to.uri if req.method == "REGISTER" else req.from_.uri) or ""
    if raw is None:
        challenge(ctx, inc, username_hint, status)
        return None
    try:
        params = parse_credentials(raw)
    except DigestError as exc:
        event(log, logging.INFO, "auth failed", source=source, why=str(exc))
        challenge(ctx, inc, username_hint, status)
        return None
    creds = ctx.directory.credentials(params.get("username", ""))
    if creds is None:
        outcome = Outcome.UNKNOWN_USER
    else:
        digest = creds.trunk.spec.auth.digest
        assert digest is not None
        verdict = ctx.auth.verify(params, req.method, str(req.uri), creds.trunk.realm, digest.algorithms,
                                  lambda _: creds.password)  # fmt: skip
        outcome = verdict.outcome
        if verdict.ok:
            if not await ctx.store.first_use(verdict.replay_key, options.nonce_ttl * 2):
                challenge(ctx, inc, creds.username, status, stale=True)
                return None
            if failures:  # a write only when there is something to forget
                await ctx.store.clear_auth_failures(source)
            return creds.trunk, creds.username
    if outcome is Outcome.STALE:
        challenge(ctx, inc, params.get("username", ""), status, stale=True)
        return None
    count = await ctx.store.note_auth_failure(source, options.auth_window)
    event(log, logging.WARNING, "auth failed", source=source, username=params.get("username", ""),
          realm=params.get("realm", ""), uri=params.get("uri", ""), why=outcome.value,
          failures=count)  # fmt: skip
    challenge(ctx, inc, params.get("username", ""), status)
    return None


def challenge(ctx: EdgeContext, inc: Incoming, username: str, status: int, stale: bool = False) -> None:
    creds = ctx.directory.credentials(username)
    trunks = [creds.trunk] if creds else ctx.directory.digest_trunks()
    if len(trunks) != 1:
        # Without a username that names the trunk, any realm would reveal which trunks exist.
        ctx.answer(inc, 403, "Forbidden")
        return
    trunk = trunks[0]
    digest = trunk.spec.auth.digest
    assert digest is not None
    response = response_for(inc.request, status, None, new_tag())
    name = "WWW-Authenticate" if status == 401 else "Proxy-Authenticate"
    for value in ctx.auth.challenges(trunk.realm, digest.algorithms, stale=stale):
        response.add(name, value)
    ctx.stack.respond(response)


async def on_register(ctx: EdgeContext, inc: Incoming) -> None:
    who = await authenticate(ctx, inc, "Authorization", 401)
    if who is None:
        return
    trunk, username = who
    source = NatSource(inc.transport, inc.addr[0], inc.addr[1])
    try:
        response = await register(inc.request, username, trunk, ctx.store, source, new_tag())
    except SipParseError as exc:
        response = response_for(inc.request, exc.status, exc.reason, new_tag())
    ctx.stack.respond(response)
