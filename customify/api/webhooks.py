"""Webhook endpoints: create (the secret shown once), list, read, change, delete, test, rotate the secret,
the delivery log and redelivery. Each endpoint is its owner's; an operator's may ask for every user's events."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import msgspec
from litestar import Controller, delete, get, patch, post
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody, QueryParameter
from litestar.status_codes import HTTP_201_CREATED, HTTP_202_ACCEPTED, HTTP_204_NO_CONTENT

from customify import webhooks
from customify.api.auth import Viewer
from customify.api.designs import iso
from customify.api.errors import Problem, field_error
from customify.models import WebhookDelivery, WebhookEndpoint
from customify.runtime import Runtime


class WebhookIn(msgspec.Struct, forbid_unknown_fields=True):
    url: Annotated[str, msgspec.Meta(max_length=webhooks.MAX_URL_LENGTH * 2)]
    events: Annotated[list[str], msgspec.Meta(max_length=20)]
    description: Annotated[str, msgspec.Meta(max_length=500)] = ""
    all_users: bool = False


class WebhookPatch(msgspec.Struct, forbid_unknown_fields=True):
    url: Annotated[str, msgspec.Meta(max_length=webhooks.MAX_URL_LENGTH * 2)] | msgspec.UnsetType = msgspec.UNSET
    events: Annotated[list[str], msgspec.Meta(max_length=20)] | msgspec.UnsetType = msgspec.UNSET
    description: Annotated[str, msgspec.Meta(max_length=500)] | msgspec.UnsetType = msgspec.UNSET
    enabled: bool | msgspec.UnsetType = msgspec.UNSET


class WebhookOut(msgspec.Struct):
    id: str
    url: str
    events: list[str]
    description: str
    all_users: bool
    enabled: bool
    disabled_reason: str | None
    failing_since: str | None
    created_at: str
    secret: str | None = None  # only when created or rotated
    previous_secret_valid_until: str | None = None


class DeliveryOut(msgspec.Struct):
    id: str  # the webhook-id header of every attempt
    event: str
    status: str
    attempts: int
    status_code: int | None
    duration_ms: float | None
    error: str | None
    next_attempt_at: str | None
    created_at: str
    delivered_at: str | None


def _out(endpoint: WebhookEndpoint, secret: bool = False) -> WebhookOut:
    return WebhookOut(
        id=endpoint.id,
        url=endpoint.url,
        events=list(endpoint.events),
        description=endpoint.description,
        all_users=endpoint.all_users,
        enabled=endpoint.enabled,
        disabled_reason=endpoint.disabled_reason,
        failing_since=iso(endpoint.failing_since),
        created_at=iso(endpoint.created_at) or "",
        secret=endpoint.secret if secret else None,
        previous_secret_valid_until=iso(endpoint.previous_secret_until) if secret else None,
    )


def _delivery_out(d: WebhookDelivery) -> DeliveryOut:
    return DeliveryOut(
        id=d.id,
        event=d.event,
        status=d.status,
        attempts=d.attempts,
        status_code=d.status_code,
        duration_ms=d.duration_ms,
        error=d.error,
        next_attempt_at=iso(d.next_attempt_at) if d.status == "pending" else None,
        created_at=iso(d.created_at) or "",
        delivered_at=iso(d.delivered_at),
    )


def _check(rt: Runtime, url: str | None, events: list[str] | None) -> None:
    """422 naming the rule: the URL's form and target (SSRF guard), known event names."""
    errors = []
    if url is not None:
        try:
            webhooks.check_target(url, rt.config)
        except webhooks.RefusedTarget as exc:
            errors.append(field_error("/url", str(exc)))
    if events is not None:
        if not events:
            errors.append(field_error("/events", f"name at least one event; known: {', '.join(webhooks.EVENTS)}"))
        for i, name in enumerate(events):
            if name not in webhooks.EVENTS:
                errors.append(
                    field_error(f"/events/{i}", f"unknown event {name!r}; known events: {', '.join(webhooks.EVENTS)}")
                )
    if errors:
        raise Problem(422, "Validation failed", "; ".join(f"{e['pointer']}: {e['detail']}" for e in errors), errors)


async def _run(rt: Runtime, write: bool, fn: Any, *args: Any) -> Any:
    return await asyncio.to_thread(rt.write if write else rt.read, fn, *args)


def _not_found(endpoint_id: str) -> Problem:
    return Problem(404, "Not found", f"no webhook endpoint {endpoint_id!r}")


class WebhookController(Controller):
    path = "/api/v1/webhooks"
    tags = ["webhooks"]

    @post("/", status_code=HTTP_201_CREATED, summary="Create a webhook endpoint (its signing secret is shown once)")
    async def create(self, data: JSONBody[WebhookIn], state: State, viewer: NamedDependency[Viewer]) -> WebhookOut:
        rt: Runtime = state.rt
        if data.all_users and not viewer.operator:
            raise Problem(
                403,
                "Forbidden",
                "all_users is for operators: a customer's endpoint receives the events of their own designs",
            )
        await asyncio.to_thread(_check, rt, data.url, data.events)
        endpoint = await _run(
            rt,
            True,
            webhooks.create_endpoint,
            viewer.user_id,
            data.url,
            list(dict.fromkeys(data.events)),
            data.description,
            data.all_users,
        )
        return _out(endpoint, secret=True)

    @get("/", summary="Your webhook endpoints")
    async def list_endpoints(self, state: State, viewer: NamedDependency[Viewer]) -> list[WebhookOut]:
        rows = await _run(state.rt, False, webhooks.list_endpoints, viewer.user_id)
        return [_out(e) for e in rows]

    async def _get(self, rt: Runtime, viewer: Viewer, endpoint_id: str) -> WebhookEndpoint:
        endpoint: WebhookEndpoint | None = await _run(rt, False, webhooks.get_endpoint, viewer.user_id, endpoint_id)
        if endpoint is None:
            raise _not_found(endpoint_id)
        return endpoint

    @get("/{endpoint_id:str}", summary="One webhook endpoint")
    async def get_endpoint(
        self, endpoint_id: FromPath[str], state: State, viewer: NamedDependency[Viewer]
    ) -> WebhookOut:
        return _out(await self._get(state.rt, viewer, endpoint_id))

    @patch("/{endpoint_id:str}", summary="Change url, events, description; enabled: true re-enables it")
    async def patch_endpoint(
        self, endpoint_id: FromPath[str], data: JSONBody[WebhookPatch], state: State, viewer: NamedDependency[Viewer]
    ) -> WebhookOut:
        rt: Runtime = state.rt
        changes = {k: v for k, v in msgspec.structs.asdict(data).items() if v is not msgspec.UNSET}
        if not changes:
            raise Problem(422, "Validation failed", "nothing to change; send url, events, description or enabled")
        await asyncio.to_thread(_check, rt, changes.get("url"), changes.get("events"))
        endpoint = await _run(rt, True, webhooks.update_endpoint, viewer.user_id, endpoint_id, changes)
        if endpoint is None:
            raise _not_found(endpoint_id)
        return _out(endpoint)

    @delete("/{endpoint_id:str}", status_code=HTTP_204_NO_CONTENT, summary="Delete an endpoint and its log")
    async def delete_endpoint(self, endpoint_id: FromPath[str], state: State, viewer: NamedDependency[Viewer]) -> None:
        if not await _run(state.rt, True, webhooks.delete_endpoint, viewer.user_id, endpoint_id):
            raise _not_found(endpoint_id)

    @post("/{endpoint_id:str}/test", status_code=HTTP_202_ACCEPTED, summary="Send a `ping` event")
    async def test(self, endpoint_id: FromPath[str], state: State, viewer: NamedDependency[Viewer]) -> DeliveryOut:
        rt: Runtime = state.rt

        def ping(session: Any) -> WebhookDelivery | None:
            endpoint = webhooks.get_endpoint(session, viewer.user_id, endpoint_id)
            if endpoint is None:
                return None
            delivery_id = webhooks.queue_ping(session, endpoint)
            session.flush()
            delivery: WebhookDelivery | None = session.get(WebhookDelivery, delivery_id)
            return delivery

        delivery = await _run(rt, True, ping)
        if delivery is None:
            raise _not_found(endpoint_id)
        return _delivery_out(delivery)

    @post(
        "/{endpoint_id:str}/rotate-secret",
        status_code=200,
        summary="A new signing secret; the old one also signs for webhooks.secret_overlap_seconds",
    )
    async def rotate(self, endpoint_id: FromPath[str], state: State, viewer: NamedDependency[Viewer]) -> WebhookOut:
        rt: Runtime = state.rt
        endpoint = await _run(
            rt, True, webhooks.rotate_secret, viewer.user_id, endpoint_id, rt.config.webhooks.secret_overlap_seconds
        )
        if endpoint is None:
            raise _not_found(endpoint_id)
        return _out(endpoint, secret=True)

    @get("/{endpoint_id:str}/deliveries", summary="The delivery log, newest first")
    async def deliveries(
        self,
        endpoint_id: FromPath[str],
        state: State,
        viewer: NamedDependency[Viewer],
        limit: Annotated[int, QueryParameter(name="limit", ge=1, le=200)] = 50,
    ) -> list[DeliveryOut]:
        rt: Runtime = state.rt
        await self._get(rt, viewer, endpoint_id)
        rows = await _run(rt, False, webhooks.list_deliveries, endpoint_id, limit)
        return [_delivery_out(d) for d in rows]

    @post(
        "/{endpoint_id:str}/deliveries/{delivery_id:str}/redeliver",
        status_code=HTTP_202_ACCEPTED,
        summary="Deliver again (same webhook-id, fresh retries)",
    )
    async def redeliver(
        self, endpoint_id: FromPath[str], delivery_id: FromPath[str], state: State, viewer: NamedDependency[Viewer]
    ) -> DeliveryOut:
        rt: Runtime = state.rt
        await self._get(rt, viewer, endpoint_id)
        delivery = await _run(rt, True, webhooks.redeliver, endpoint_id, delivery_id)
        if delivery is None:
            raise Problem(404, "Not found", f"no delivery {delivery_id!r} of endpoint {endpoint_id!r}")
        return _delivery_out(delivery)
