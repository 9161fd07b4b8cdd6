"""/v1/routing: the routing configuration the senders and responders use (docs/api.md, "Routing").

- providers, channel routes and channel policies are global: every key may read them (a tenant key
  without the providers' settings), only operator (admin) keys may change them (403 otherwise);
- tenant overrides are the caller's own: a key sees and changes only its tenant's.

Changes reach running senders and responders within ``SWITCHBOARD_ROUTING_REFRESH_S`` (the tables'
triggers bump ``routing_version``); nothing needs a restart.
"""

from __future__ import annotations

from typing import Annotated, Any

import asyncpg
from fastapi import APIRouter, Path, Query, Response
from pydantic import BaseModel

from services.api.context import Principal
from services.api.deps import Caller, Context, Operator
from services.api.errors import FORBIDDEN_RESPONSES, Conflict, NotFound, Unprocessable
from services.api.schemas.common import Text
from services.api.schemas.routing import (
    PROVIDER_NAME_PATTERN,
    ChannelFallbackIn,
    ChannelFallbackList,
    ChannelFallbackOut,
    ChannelList,
    ChannelOut,
    ChannelRouteIn,
    ChannelRouteOut,
    OverrideIn,
    OverrideList,
    OverrideOut,
    PolicyIn,
    PolicyOut,
    ProviderIn,
    ProviderList,
    ProviderOut,
    shown_settings,
)
from services.api.store import routing as store
from shared.core.errors import InvalidRecipient
from shared.core.models import Channel
from shared.core.providers import KIND_CHANNELS, ProviderKind
from shared.core.recipients import PHONE_CHANNELS, normalise, reachable_on
from shared.core.routing import ChannelPolicy, ProviderSpec, Route, RoutingConfig, Strategy, TenantRoute
from shared.runtime.logs import get_logger

log = get_logger("api.routing")
router = APIRouter(prefix="/v1/routing", tags=["routing"])
ProviderName = Annotated[
    str,
    Path(
        pattern=PROVIDER_NAME_PATTERN,
        description="1 to 64 letters, digits, '_', '.' or '-', starting with a letter or digit.",
    ),
]


def _created(model: type[BaseModel]) -> dict[int | str, dict[str, Any]]:
    return {201: {"model": model, "description": "Created."}}


def _unknown_provider(name: str) -> Unprocessable:
    return Unprocessable(
        f"no provider {name!r}; an operator creates it with PUT /v1/routing/providers/{name}",
        code="unknown_provider",
    )


def _cannot_carry(name: str, kind: str, channel: str) -> Unprocessable:
    carries = ", ".join(sorted(KIND_CHANNELS[ProviderKind(kind)]))
    return Unprocessable(
        f"provider {name!r} is of kind {kind}, which cannot carry {channel} (it carries {carries})",
        code="incompatible_provider",
    )


# ---- providers -----------------------------------------------------------------------------------------


def _provider_out(row: Any, principal: Principal) -> ProviderOut:
    fields = dict(row)
    fields["settings"] = shown_settings(fields["settings"]) if principal.admin else None
    return ProviderOut(**fields)


@router.get("/providers", response_model=ProviderList, summary="List the providers")
async def list_providers(context: Context, principal: Caller) -> ProviderList:
    async with context.db.connection() as conn:
        rows = await store.list_providers(conn)
    return ProviderList(items=[_provider_out(r, principal) for r in rows])


@router.get("/providers/{name}", response_model=ProviderOut, summary="A provider")
async def get_provider(name: ProviderName, context: Context, principal: Caller) -> ProviderOut:
    async with context.db.connection() as conn:
        row = await store.get_provider(conn, name)
    if row is None:
        raise NotFound(f"no provider {name!r}")
    return _provider_out(row, principal)


@router.put(
    "/providers/{name}",
    response_model=ProviderOut,
    responses={**FORBIDDEN_RESPONSES, **_created(ProviderOut)},
    summary="Create or replace a provider (operator keys)",
)
async def put_provider(
    name: ProviderName, body: ProviderIn, context: Context, principal: Operator, response: Response
) -> ProviderOut:
    async with context.db.transaction() as conn:
        channels = await store.routed_channels(conn, name)
        for channel in channels or ():
            if Channel(channel) not in KIND_CHANNELS[body.kind]:
                raise Unprocessable(
                    f"provider {name!r} is routed for {channel}, which kind {body.kind.value} cannot carry;"
                    f" delete that route first",
                    code="incompatible_provider",
                )
        created = await store.upsert_provider(conn, name, body)
        row = await store.get_provider(conn, name)
    assert row is not None
    response.status_code = 201 if created else 200
    log.info("routing_provider_saved", key_id=principal.key_id, provider=name, created=created)
    return _provider_out(row, principal)


@router.delete(
    "/providers/{name}",
    status_code=204,
    response_class=Response,
    responses=FORBIDDEN_RESPONSES,
    summary="Delete an unrouted provider (operator keys)",
)
async def delete_provider(name: ProviderName, context: Context, principal: Operator) -> Response:
    async with context.db.transaction() as conn:
        channels = await store.routed_channels(conn, name)
        if channels is None:
            raise NotFound(f"no provider {name!r}")
        if channels:
            raise Conflict(
                f"provider {name!r} is routed for {', '.join(channels)}; delete those routes first"
                f" (DELETE /v1/routing/channels/{channels[0]}/routes/{name})",
                code="provider_in_use",
            )
        await store.delete_provider(conn, name)
    log.info("routing_provider_deleted", key_id=principal.key_id, provider=name)
    return Response(status_code=204)


# ---- channels: routes and policy -----------------------------------------------------------------------


def _config(snapshot: store.Snapshot, tenant: str) -> RoutingConfig:
    """The configuration as the senders build it (shared.db.routing_store.load_config), from a snapshot."""
    providers = {r["name"]: ProviderSpec(r["name"], r["kind"], r["active"]) for r in snapshot.providers}
    routes: dict[str, list[Route]] = {}
    for r in snapshot.routes:
        routes.setdefault(r["channel"], []).append(
            Route(r["provider"], r["priority"], r["weight"], r["cost"], r["active"], tuple(r["destinations"]))
        )
    overrides: dict[tuple[str, str], dict[str, TenantRoute]] = {}
    for r in snapshot.overrides:
        overrides.setdefault((tenant, r["channel"]), {})[r["provider"]] = TenantRoute(
            r["priority"], r["active"]
        )
    return RoutingConfig(
        providers=providers,
        routes={channel: tuple(rs) for channel, rs in routes.items()},
        policies={r["channel"]: ChannelPolicy(strategy=Strategy(r["strategy"])) for r in snapshot.policies},
        tenant_routes=overrides,
    )


def _policy_out(row: Any) -> PolicyOut:
    if row is None:
        return PolicyOut(
            strategy=Strategy.FALLBACK,
            retry_mode=None,
            retry_initial_s=None,
            retry_max_s=None,
            retry_max_attempts=None,
            retry_delays_s=None,
            max_cost=None,
            min_success_rate=None,
            configured=False,
            updated_at=None,
        )
    fields = {k: v for k, v in dict(row).items() if k != "channel"}
    return PolicyOut(**fields, configured=True)


async def _channels(
    context: Context, principal: Principal, channel: Channel | None, to: str | None = None
) -> list[ChannelOut]:
    async with context.db.connection() as conn:
        snapshot = await store.snapshot(conn, principal.tenant, channel.value if channel else None)
    if snapshot.providers:
        config, source = _config(snapshot, principal.tenant), "database"
    else:
        config, source = RoutingConfig.from_chains(context.settings.provider_chains), "settings"
    policies = {r["channel"]: r for r in snapshot.policies}
    views = []
    for ch in [channel] if channel else list(Channel):
        views.append(
            ChannelOut(
                channel=ch,
                policy=_policy_out(policies.get(ch.value)),
                routes=[ChannelRouteOut(**dict(r)) for r in snapshot.routes if r["channel"] == ch.value],
                chain=config.fallback_chain(principal.tenant, ch.value, to),
                source=source,
            )
        )
    return views


@router.get("/channels", response_model=ChannelList, summary="Every channel's policy, routes and your chain")
async def list_channels(context: Context, principal: Caller) -> ChannelList:
    return ChannelList(items=await _channels(context, principal, None))


@router.get(
    "/channels/{channel}", response_model=ChannelOut, summary="A channel's policy, routes and your chain"
)
async def get_channel(
    channel: Channel,
    context: Context,
    principal: Caller,
    to: Annotated[
        Text | None,
        Query(max_length=64, description="A phone number: the chain its messages get (destination routing)."),
    ] = None,
) -> ChannelOut:
    recipient = None
    if to is not None:
        if channel.value not in PHONE_CHANNELS:
            raise Unprocessable(f"to= is a phone number; {channel.value} has no destination routing")
        try:
            recipient = normalise(channel.value, to)
        except InvalidRecipient as exc:
            raise Unprocessable(f"to: {exc.message}") from exc
    [view] = await _channels(context, principal, channel, recipient)
    return view


@router.put(
    "/channels/{channel}/policy",
    response_model=PolicyOut,
    responses=FORBIDDEN_RESPONSES,
    summary="Set a channel's strategy and retry policy (operator keys)",
)
async def put_policy(channel: Channel, body: PolicyIn, context: Context, principal: Operator) -> PolicyOut:
    async with context.db.transaction() as conn:
        await store.upsert_policy(conn, channel.value, body)
        row = await store.get_policy(conn, channel.value)
    log.info(
        "routing_policy_saved", key_id=principal.key_id, channel=channel.value, strategy=body.strategy.value
    )
    return _policy_out(row)


@router.get(
    "/channels/{channel}/routes/{provider}", response_model=ChannelRouteOut, summary="A route of a channel"
)
async def get_route(
    channel: Channel, provider: ProviderName, context: Context, principal: Caller
) -> ChannelRouteOut:
    async with context.db.connection() as conn:
        row = await store.get_route(conn, channel.value, provider)
    if row is None:
        raise NotFound(f"{channel.value} has no route to {provider!r}")
    return ChannelRouteOut(**dict(row))


@router.put(
    "/channels/{channel}/routes/{provider}",
    response_model=ChannelRouteOut,
    responses={**FORBIDDEN_RESPONSES, **_created(ChannelRouteOut)},
    summary="Route a channel to a provider, or change that route (operator keys)",
)
async def put_route(
    channel: Channel,
    provider: ProviderName,
    body: ChannelRouteIn,
    context: Context,
    principal: Operator,
    response: Response,
) -> ChannelRouteOut:
    async with context.db.transaction() as conn:
        kind = await store.provider_kind(conn, provider)
        if kind is None:
            raise _unknown_provider(provider)
        if channel not in KIND_CHANNELS[ProviderKind(kind)]:
            raise _cannot_carry(provider, kind, channel.value)
        if body.destinations and channel.value not in PHONE_CHANNELS:
            raise Unprocessable(
                f"destinations route phone numbers; {channel.value} recipients are not numbers",
                code="invalid_destinations",
            )
        created = await store.upsert_route(conn, channel.value, provider, body)
        row = await store.get_route(conn, channel.value, provider)
    assert row is not None
    response.status_code = 201 if created else 200
    log.info(
        "routing_route_saved",
        key_id=principal.key_id,
        channel=channel.value,
        provider=provider,
        created=created,
    )
    return ChannelRouteOut(**dict(row))


@router.delete(
    "/channels/{channel}/routes/{provider}",
    status_code=204,
    response_class=Response,
    responses=FORBIDDEN_RESPONSES,
    summary="Stop routing a channel to a provider (operator keys)",
)
async def delete_route(
    channel: Channel, provider: ProviderName, context: Context, principal: Operator
) -> Response:
    async with context.db.transaction() as conn:
        deleted = await store.delete_route(conn, channel.value, provider)
    if not deleted:
        raise NotFound(f"{channel.value} has no route to {provider!r}")
    log.info("routing_route_deleted", key_id=principal.key_id, channel=channel.value, provider=provider)
    return Response(status_code=204)


# ---- the caller's tenant overrides ---------------------------------------------------------------------


@router.get("/overrides", response_model=OverrideList, summary="Your tenant's overrides")
async def list_overrides(context: Context, principal: Caller, channel: Channel | None = None) -> OverrideList:
    async with context.db.connection() as conn:
        rows = await store.list_overrides(conn, principal.tenant, channel.value if channel else None)
    return OverrideList(items=[OverrideOut(**dict(r)) for r in rows])


@router.get("/overrides/{channel}/{provider}", response_model=OverrideOut, summary="One of your overrides")
async def get_override(
    channel: Channel, provider: ProviderName, context: Context, principal: Caller
) -> OverrideOut:
    async with context.db.connection() as conn:
        row = await store.get_override(conn, principal.tenant, channel.value, provider)
    if row is None:
        raise NotFound(f"no override of {provider!r} for {channel.value}")
    return OverrideOut(**dict(row))


@router.put(
    "/overrides/{channel}/{provider}",
    response_model=OverrideOut,
    responses=_created(OverrideOut),
    summary="Reorder or exclude one of a channel's providers for your tenant",
)
async def put_override(
    channel: Channel,
    provider: ProviderName,
    body: OverrideIn,
    context: Context,
    principal: Caller,
    response: Response,
) -> OverrideOut:
    try:
        async with context.db.transaction() as conn:
            route_priority = await store.route_priority(conn, channel.value, provider)
            if route_priority is None:
                if await store.provider_kind(conn, provider) is None:
                    raise _unknown_provider(provider)
                raise Unprocessable(
                    f"{channel.value} does not route to {provider!r}; an override can only reorder or"
                    f" exclude the channel's own providers (GET /v1/routing/channels/{channel.value})",
                    code="not_routed",
                )
            priority = route_priority if body.priority is None else body.priority
            created = await store.upsert_override(
                conn, principal.tenant, channel.value, provider, body, priority
            )
            row = await store.get_override(conn, principal.tenant, channel.value, provider)
    except asyncpg.ForeignKeyViolationError as exc:  # the provider went meanwhile
        raise _unknown_provider(provider) from exc
    assert row is not None
    response.status_code = 201 if created else 200
    log.info(
        "routing_override_saved",
        tenant=principal.tenant,
        channel=channel.value,
        provider=provider,
        priority=priority,
        active=body.active,
    )
    return OverrideOut(**dict(row))


@router.delete(
    "/overrides/{channel}/{provider}",
    status_code=204,
    response_class=Response,
    summary="Remove one of your overrides",
)
async def delete_override(
    channel: Channel, provider: ProviderName, context: Context, principal: Caller
) -> Response:
    async with context.db.transaction() as conn:
        deleted = await store.delete_override(conn, principal.tenant, channel.value, provider)
    if not deleted:
        raise NotFound(f"no override of {provider!r} for {channel.value}")
    log.info("routing_override_deleted", tenant=principal.tenant, channel=channel.value, provider=provider)
    return Response(status_code=204)


# ---- the caller's tenant channel fallbacks ---------------------------------------------------------------


def _fallback_out(row: Any) -> ChannelFallbackOut:
    return ChannelFallbackOut(
        channel=row["channel"], fallback_channels=list(row["fallback_channels"]), updated_at=row["updated_at"]
    )


@router.get(
    "/channel-fallbacks", response_model=ChannelFallbackList, summary="Your tenant's channel fallbacks"
)
async def list_channel_fallbacks(context: Context, principal: Caller) -> ChannelFallbackList:
    async with context.db.connection() as conn:
        rows = await store.list_channel_fallbacks(conn, principal.tenant)
    return ChannelFallbackList(items=[_fallback_out(r) for r in rows])


@router.put(
    "/channel-fallbacks/{channel}",
    response_model=ChannelFallbackOut,
    responses=_created(ChannelFallbackOut),
    summary="Where your messages of a channel go when they cannot be delivered on it",
)
async def put_channel_fallback(
    channel: Channel, body: ChannelFallbackIn, context: Context, principal: Caller, response: Response
) -> ChannelFallbackOut:
    seen: set[Channel] = set()
    for fallback in body.fallback_channels:
        if fallback == channel or fallback in seen:
            raise Unprocessable(f"{fallback.value} is named twice", code="invalid_fallback")
        if not reachable_on(channel.value, fallback.value):
            raise Unprocessable(
                f"a {channel.value} recipient cannot be reached on {fallback.value}", code="invalid_fallback"
            )
        seen.add(fallback)
    async with context.db.transaction() as conn:
        created, row = await store.upsert_channel_fallback(
            conn, principal.tenant, channel.value, [c.value for c in body.fallback_channels]
        )
    response.status_code = 201 if created else 200
    log.info(
        "channel_fallback_saved",
        tenant=principal.tenant,
        channel=channel.value,
        fallback_channels=[c.value for c in body.fallback_channels],
    )
    return _fallback_out(row)


@router.delete(
    "/channel-fallbacks/{channel}",
    status_code=204,
    response_class=Response,
    summary="Remove your fallback of a channel",
)
async def delete_channel_fallback(channel: Channel, context: Context, principal: Caller) -> Response:
    async with context.db.transaction() as conn:
        deleted = await store.delete_channel_fallback(conn, principal.tenant, channel.value)
    if not deleted:
        raise NotFound(f"no channel fallback for {channel.value}")
    log.info("channel_fallback_deleted", tenant=principal.tenant, channel=channel.value)
    return Response(status_code=204)
