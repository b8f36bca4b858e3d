"""Subscriber tokens: the JWTs a web app mints to say which channels a browser may read.

With a subscriber secret set, every subscriber transport needs a token (HS256 only, so
a token cannot pick its own algorithm, `none` included), in `Authorization: Bearer` or,
for EventSource and WebSocket, which cannot set headers, in `?token=`. Its claims:
`channels` (ids and/or names) and `exp` (required), and `sub` (optional: who the
subscriber is, as presence lists it). A bad token is a 401 before the
query is even read; a channel outside the claim is a 403 before anything is looked up
by the hub or parked. Error sentences never quote the token: it is a credential.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import jwt

from pushup.core.errors import ChannelsNotFound
from pushup.core.hub import Hub, PollQuery
from pushup.core.model import ChannelRef
from pushup.http import params
from pushup.http.errors import ApiError, Forbidden, InvalidBody, InvalidParameter, Unauthorized
from pushup.http.request import Request

# Clocks of the web app that mints tokens and of this server may disagree a little.
LEEWAY_S = 10.0
ALGORITHM = "HS256"
# RFC 7518 §3.2: an HS256 key is at least as long as the hash, 256 bits.
MIN_SECRET_BYTES = 32

_CHALLENGE = (("WWW-Authenticate", 'Bearer realm="pushup"'),)
_TOKEN_PARAM = {"token"}


class TokenExpired(ApiError):
    """A subscriber token past its `exp`: the client needs a fresh one."""

    status = 401
    code = "token_expired"


@dataclass(frozen=True, slots=True)
class Grant:
    """What a valid token allows: reading `channels` until `expires_at` (epoch seconds,
    leeway included); `sub` is who it was minted for (None without the claim)."""

    channels: frozenset[ChannelRef]
    expires_at: float
    sub: str | None = None

    async def authorize(self, query: PollQuery, hub: Hub) -> PollQuery:
        """The query if every channel it names is granted, else a 403 naming the others.

        A channel requested as named in the token passes as is. One requested by id
        while the token names it by name (or the other way round) is looked up, and
        the query then names it by the id that was checked, so the poll cannot end up
        on another channel that took the name meanwhile. An unknown channel outside
        the claim is refused, not reported missing: a token tells nothing about
        channels it does not grant."""
        granted = self.channels
        if self.sub is not None:
            query = replace(query, who=self.sub)
        if all(ref in granted for ref in query.channels):
            return query
        checked: list[ChannelRef] = []
        refused: list[ChannelRef] = []
        for ref in query.channels:
            if ref in granted:
                checked.append(ref)
                continue
            try:
                info = await hub.channel_info(ref)
            except ChannelsNotFound:
                refused.append(ref)
                continue
            if info.id in granted or (info.name is not None and info.name in granted):
                checked.append(info.id)
            else:
                refused.append(ref)
        if refused:
            raise Forbidden(
                "the subscriber token does not grant these channels: "
                + ", ".join(map(str, refused)),
                channels=refused,
            )
        return replace(query, channels=tuple(checked))


class SubscriberTokens:
    """Checks the token of each subscriber request against one secret."""

    def __init__(self, secret: str) -> None:
        self._key = secret.encode()

    def verify(self, request: Request) -> Grant:
        """The grant of the request's token; 401 (with a Bearer challenge) without a
        valid one."""
        token = _token(request)
        if token is None:
            raise Unauthorized(
                "subscribers need a token: Authorization: Bearer <token>, or ?token=<token>",
                headers=_CHALLENGE,
            )
        return self.decode(token)

    def decode(self, token: str) -> Grant:
        try:
            claims = jwt.decode(
                token,
                self._key,
                algorithms=[ALGORITHM],
                leeway=LEEWAY_S,
                options={"require": ["exp", "channels"]},
            )
        except jwt.ExpiredSignatureError:
            raise TokenExpired("the subscriber token has expired", headers=_CHALLENGE) from None
        except jwt.MissingRequiredClaimError as exc:
            raise Unauthorized(
                f"the subscriber token has no {exc.claim!r} claim", headers=_CHALLENGE
            ) from None
        except jwt.InvalidAlgorithmError:
            raise Unauthorized(
                f"the subscriber token must be signed with {ALGORITHM}", headers=_CHALLENGE
            ) from None
        except jwt.InvalidSignatureError:
            raise Unauthorized(
                "the subscriber token's signature is wrong", headers=_CHALLENGE
            ) from None
        except jwt.InvalidTokenError as exc:
            # PyJWT's own sentences name what failed (a malformed token, `nbf` ahead,
            # an `aud` this server was not told to expect) and never quote the token.
            raise Unauthorized(
                f"the subscriber token is not valid: {exc}", headers=_CHALLENGE
            ) from None
        sub = claims.get("sub")
        if sub is not None and (not isinstance(sub, str) or not sub):
            raise Unauthorized(
                "the subscriber token's sub claim must be a non-empty string",
                headers=_CHALLENGE,
            )
        return Grant(_channels(claims.get("channels")), float(claims["exp"]) + LEEWAY_S, sub)


def _token(request: Request) -> str | None:
    """The bearer token of the header, else the query's. Another scheme in the header
    (a browser repeating the Basic credentials of a site behind a password) is not
    ours: the query's token is used then."""
    header = request.headers.get("authorization")
    if header:
        scheme, _, token = header.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    in_query = params.query(request.query, _TOKEN_PARAM).get("token")
    return in_query or None


def _channels(claim: object) -> frozenset[ChannelRef]:
    """The `channels` claim as ids (ints) and names, validated as a request's would be."""
    if not isinstance(claim, list):
        raise Unauthorized(
            "the subscriber token's channels claim must be a list of channel ids or names",
            headers=_CHALLENGE,
        )
    refs: Sequence[ChannelRef]
    try:
        refs = [params.channel_ref(value, InvalidParameter) for value in claim]
    except (InvalidBody, InvalidParameter) as exc:
        raise Unauthorized(
            f"the subscriber token's channels claim is not valid: {exc.detail}",
            headers=_CHALLENGE,
        ) from None
    return frozenset(refs)
