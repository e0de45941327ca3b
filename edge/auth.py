"""Digest authentication of requests (RFC 3261 22, RFC 8760), lockout of sources that keep failing,
and REGISTER (authenticated, then handed to the registrar)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from trunkline.core.logs import event
from trunkline.core.models import Trunk
from trunkline.edge import registrations
from trunkline.edge.context import EdgeContext
from trunkline.edge.digest import DigestError, Outcome, parse_credentials
from trunkline.edge.legs import new_tag, response_for, user_of
from trunkline.edge.lockout import AuthFailures, Lockout, LockoutPolicy, challenge_realm
from trunkline.edge.registrar import NatSource, register
from trunkline.sip.errors import SipParseError
from trunkline.sip.stack import Incoming

log = logging.getLogger("trunkline.edge")
T = TypeVar("T")


async def _store_or_local(remote: Awaitable[T], local: Callable[[], Awaitable[T]], optional: bool) -> T:
    """A store step of authentication; when `optional` (an emergency number was dialled), a store
    that does not answer has the step done on this edge's own bounded state instead (`local`,
    edge/local_auth.py): the lockout and the nonce replay check still hold, per edge, meanwhile."""
    if not optional:
        return await remote
    try:
        return await remote
    except Exception as exc:
        event(log, logging.WARNING, "emergency call authenticated on this edge's own lockout state",
              error=str(exc))  # fmt: skip
        return await local()


async def _first_use(ctx: EdgeContext, key: str, ttl: float, emergency: bool) -> bool:
    """The store's replay check; an emergency call's nonce is marked on this edge too, so that it is
    known here should it be replayed once the store is gone (and one used meanwhile is refused)."""
    stored = await ctx.store.first_use(key, ttl)
    return (await ctx.local_auth.first_use(key, ttl) if emergency else True) and stored


async def authenticate(
    ctx: EdgeContext, inc: Incoming, header: str, status: int, store_optional: bool = False
) -> tuple[Trunk, str] | None:
    """(trunk, username) for a request that proved itself, else None after answering it (or, for a
    (source, username) that keeps failing, after ending its transaction unanswered).
    `store_optional`: the store not answering does not fail it (`_store_or_local`)."""
    req, source, options = inc.request, inc.addr[0], ctx.options
    params: dict[str, str] | None = None
    raw = req.get(header)
    if raw is not None:
        try:
            params = parse_credentials(raw)
        except DigestError as exc:
            event(log, logging.INFO, "auth failed", source=source, why=str(exc))
    hint = user_of(req.to.uri if req.method == "REGISTER" else req.from_.uri) or ""
    username = (params or {}).get("username", "") or hint
    policy = LockoutPolicy(options.lockout_after, options.silence_after)
    failures = AuthFailures(ctx.store, options.auth_window, policy)
    local = AuthFailures(ctx.local_auth, options.auth_window, policy)
    verdict = await _store_or_local(failures.verdict(source, username),
                                    lambda: local.verdict(source, username), store_optional)  # fmt: skip
    if verdict is Lockout.SILENCE:
        ctx.metrics.rejected("lockout")
        ctx.stack.discard(inc.key)  # no answer, and no transaction left to retransmit one
        return None
    if verdict is Lockout.FORBID:
        ctx.metrics.rejected("lockout")
        # Hammering counts too.
        await _store_or_local(failures.failed(source, username), lambda: local.failed(source, username),
                              store_optional)  # fmt: skip
        ctx.answer(inc, 403, "Forbidden (too many failed authentications)")
        return None
    if params is None:
        challenge(ctx, inc, username, status)
        return None
    creds = ctx.directory.credentials(params.get("username", ""))
    if creds is None:
        outcome = Outcome.UNKNOWN_USER
    else:
        digest = creds.trunk.spec.auth.digest
        assert digest is not None
        verdict_ = ctx.auth.verify(params, req.method, str(req.uri), creds.trunk.realm, digest.algorithms,
                                   lambda _: creds.password, source=source,
                                   allow_rfc2069=digest.allowRfc2069)  # fmt: skip
        outcome = verdict_.outcome
        if verdict_.ok:
            key, ttl = verdict_.replay_key, options.nonce_ttl * 2
            first = await _store_or_local(
                _first_use(ctx, key, ttl, store_optional), lambda: ctx.local_auth.first_use(key, ttl),
                store_optional,
            )  # fmt: skip
            if not first:
                challenge(ctx, inc, creds.username, status, stale=True)
                return None
            await _store_or_local(
                failures.succeeded(source, creds.username), lambda: local.succeeded(source, creds.username),
                store_optional,
            )  # fmt: skip
            ctx.stack.vouch(source)
            return creds.trunk, creds.username
    if outcome is Outcome.STALE:
        challenge(ctx, inc, username, status, stale=True)
        return None
    count = await _store_or_local(failures.failed(source, username), lambda: local.failed(source, username),
                                  store_optional)  # fmt: skip
    ctx.metrics.rejected("digest")
    event(log, logging.WARNING, "auth failed", source=source, username=username,
          realm=params.get("realm", ""), uri=params.get("uri", ""), why=outcome.value,
          failures=count)  # fmt: skip
    challenge(ctx, inc, username, status)
    return None


def challenge(ctx: EdgeContext, inc: Incoming, username: str, status: int, stale: bool = False) -> None:
    """A 401/407 of the same shape for every username, known or not (`challenge_realm`), with a
    nonce good only from this source. Without any digest trunk there is nothing to offer: 403."""
    trunks = ctx.directory.digest_trunks()
    if not trunks:  # a source in no trunk's IP ACL (nor a carrier's CIDRs), and no digest to offer
        ctx.metrics.rejected("acl")
        event(log, logging.DEBUG, "request rejected", rule="acl", source=inc.addr[0])
        ctx.answer(inc, 403, "Forbidden")
        return
    creds = ctx.directory.credentials(username)
    known = creds.trunk.realm if creds else None
    realm = challenge_realm(username, lambda _: known, [t.realm for t in trunks], ctx.auth.secret)
    trunk = creds.trunk if creds else next(t for t in trunks if t.realm == realm)
    digest = trunk.spec.auth.digest
    assert digest is not None
    response = response_for(inc.request, status, None, new_tag())
    name = "WWW-Authenticate" if status == 401 else "Proxy-Authenticate"
    for value in ctx.auth.challenges(realm, digest.algorithms, stale=stale, source=inc.addr[0]):
        response.add(name, value)
    ctx.stack.respond(response)


async def on_register(ctx: EdgeContext, inc: Incoming) -> None:
    who = await authenticate(ctx, inc, "Authorization", 401)
    if who is None:
        return
    trunk, username = who
    source = NatSource(inc.transport, inc.addr[0], inc.addr[1])
    try:
        response = await register(
            inc.request, username, trunk, ctx.store, source, new_tag(), deny=ctx.options.contact_deny
        )
    except SipParseError as exc:
        response = response_for(inc.request, exc.status, exc.reason, new_tag())
    ctx.stack.respond(response)
    if response.status == 200:
        await registrations.refresh_one(ctx, trunk, username)
