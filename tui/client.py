"""The dashboard's only way to the system: the Customify HTTP API (REST + server-sent events).

Responses are decoded with the API's own structs (customify.schemas), so a change of
shape on either side fails here, in one place; the methods then hand the screens plain
JSON values, which they read with `.get` so a missing field never crashes the screen.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx
import msgspec

from customify import schemas

T = TypeVar("T")
READ_TIMEOUT = 6.0  # the server sends the queue stats every second: 6 s of silence means it is gone


class ApiError(Exception):
    """The API answered with an error (problem+json `detail` when it sent one)."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"{status}: {detail}")
        self.status = status
        self.detail = detail


@dataclass
class StreamEvent:
    kind: str
    data: dict[str, Any] = field(default_factory=dict)
    id: int | None = None


def parse_sse(lines: list[str]) -> StreamEvent | None:
    """One event from its lines; None for a comment-only block (a heartbeat)."""
    kind, data, event_id = "message", [], None
    for line in lines:
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "event":
            kind = value
        elif name == "data":
            data.append(value)
        elif name == "id" and value.isdigit():
            event_id = int(value)
    if not data and event_id is None and kind == "message":
        return None
    try:
        payload = json.loads("\n".join(data)) if data else {}
    except ValueError:
        payload = {}
    return StreamEvent(kind, payload if isinstance(payload, dict) else {}, event_id)


class ApiClient:
    """An async client of one Customify instance; `http` may be handed in (tests, benchmarks)."""

    def __init__(
        self, base_url: str, key: str | None = None, *, http: httpx.AsyncClient | None = None, timeout: float = 5.0
    ) -> None:
        self.base_url = base_url.rstrip("/")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.http = http or httpx.AsyncClient(base_url=self.base_url, headers=headers, timeout=timeout)

    async def aclose(self) -> None:
        await self.http.aclose()

    async def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        response = await self.http.request(method, path, **kwargs)
        if response.status_code >= 400 and response.status_code != 503:
            detail = response.reason_phrase
            with contextlib.suppress(ValueError, AttributeError):
                detail = response.json().get("detail") or detail
            raise ApiError(response.status_code, str(detail))
        return response

    async def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = await self._request(method, path, **kwargs)
        try:
            return response.json() if response.content else None
        except ValueError:
            return None

    async def _typed(self, method: str, path: str, type_: type[T], **kwargs: Any) -> Any:
        """The response decoded as the API's struct `type_`, as plain values; None when it is not one."""
        response = await self._request(method, path, **kwargs)
        try:
            return msgspec.to_builtins(msgspec.json.decode(response.content, type=type_))
        except (msgspec.DecodeError, msgspec.ValidationError):
            return None

    # Reading ------------------------------------------------------------------

    async def health(self) -> dict[str, Any]:
        body = await self._json("GET", "/api/v1/system/health")
        return body if isinstance(body, dict) else {}

    async def worker_status(self) -> dict[str, Any]:
        body = await self._json("GET", "/api/v1/system/worker-status")
        return body if isinstance(body, dict) else {}

    async def designs(
        self, status: str | None = None, limit: int = 100, cursor: str | None = None, every_owner: bool = False
    ) -> dict[str, Any]:
        params: dict[str, Any] = {"limit": limit}
        if every_owner:  # operators: every user's designs
            params["owner"] = "all"
        if status:
            params["status"] = status
        if cursor:
            params["cursor"] = cursor
        body = await self._typed("GET", "/api/v1/designs", schemas.DesignPage, params=params)
        return body if isinstance(body, dict) else {}

    async def design(self, design_id: str, every_owner: bool = False) -> dict[str, Any] | None:
        try:
            body = await self._typed(
                "GET", f"/api/v1/designs/{design_id}", schemas.Design, params={"owner": "all"} if every_owner else None
            )
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise
        return body if isinstance(body, dict) else None

    async def design_tasks(self, design_id: str, limit: int = 50) -> list[dict[str, Any]]:
        body = await self._typed(
            "GET", "/api/v1/system/tasks", list[schemas.TaskRunOut], params={"design_id": design_id, "limit": limit}
        )
        return [t for t in body if isinstance(t, dict)] if isinstance(body, list) else []

    async def thumbnail(self, design_id: str) -> bytes | None:
        response = await self.http.get(f"/api/v1/designs/{design_id}/thumbnail")
        return response.content if response.status_code == 200 else None

    async def pending(self, limit: int = 1000) -> list[dict[str, Any]]:
        body = await self._typed("GET", "/api/v1/control/pending", list[schemas.PendingTask], params={"limit": limit})
        return [t for t in body if isinstance(t, dict)] if isinstance(body, list) else []

    async def stats(self) -> dict[str, Any]:
        body = await self._json("GET", "/api/v1/control/stats")
        return body if isinstance(body, dict) else {}

    async def stack(self, worker: str) -> dict[str, Any]:
        body = await self._typed("GET", f"/api/v1/control/workers/{worker}/stack", schemas.ThreadStack)
        return body if isinstance(body, dict) else {}

    def preview_url(self, design_id: str) -> str:
        return f"{self.base_url}/api/v1/designs/{design_id}/preview.png"

    # Acting -------------------------------------------------------------------

    async def create_design(self, body: dict[str, Any]) -> dict[str, Any]:
        result = await self._typed("POST", "/api/v1/designs", schemas.Design, json=body)
        return result if isinstance(result, dict) else {}

    async def rerender(self, design_id: str) -> dict[str, Any]:
        result = await self._typed("POST", f"/api/v1/designs/{design_id}/render", schemas.Design)
        return result if isinstance(result, dict) else {}

    async def delete(self, design_id: str) -> None:
        await self._request("DELETE", f"/api/v1/designs/{design_id}")

    async def pause(self, paused: bool) -> None:
        await self._request("POST", "/api/v1/control/pause" if paused else "/api/v1/control/resume")

    async def set_workers(self, threads: int) -> dict[str, Any]:
        result = await self._typed("PUT", "/api/v1/control/workers", schemas.WorkersOut, json={"threads": threads})
        return result if isinstance(result, dict) else {}

    async def revoke(self, task_id: str) -> None:
        await self._request("POST", f"/api/v1/control/pending/{task_id}/revoke")

    async def purge(self) -> int:
        result = await self._typed("POST", "/api/v1/control/purge", schemas.Purged)
        return int(result.get("purged", 0)) if isinstance(result, dict) else 0

    # Streaming ----------------------------------------------------------------

    async def events(self, last_event_id: int | None = None) -> AsyncIterator[StreamEvent]:
        """Server-sent events until the connection ends; raises on network errors and silence."""
        headers = {"Accept": "text/event-stream"}
        if last_event_id is not None:
            headers["Last-Event-ID"] = str(last_event_id)
        timeout = httpx.Timeout(5.0, read=READ_TIMEOUT)
        async with self.http.stream("GET", "/api/v1/events", headers=headers, timeout=timeout) as response:
            if response.status_code != 200:
                raise ApiError(response.status_code, "the event stream was refused")
            lines: list[str] = []
            async for line in response.aiter_lines():
                if line:
                    lines.append(line)
                    continue
                event = parse_sse(lines)
                lines = []
                if event is not None:
                    yield event
