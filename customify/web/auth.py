"""Who is looking at a page: the API key kept in a cookie by the login page, or the dev user on loopback.

The cookie holds the key itself (HttpOnly, SameSite=Strict, Secure over https), so the
browser's requests to the API (the event stream, previews, thumbnails) are the same user's:
`api.auth` accepts it for GET and HEAD only. Everything that changes state goes through
the pages' forms, which Litestar's CSRF middleware guards with a token.
"""

from __future__ import annotations

import hmac
from typing import Annotated, Any
from urllib.parse import quote

from litestar import Controller, Request, Response, get, post
from litestar.datastructures import Cookie, State
from litestar.enums import RequestEncodingType
from litestar.params import Body, QueryParameter
from litestar.response import Redirect, Template

from customify import records
from customify.api.auth import KEY_COOKIE, Viewer
from customify.models import DEV_USER_ID
from customify.runtime import Runtime

AnyRequest = Request[Any, Any, Any]
Form = Annotated[dict[str, str], Body(media_type=RequestEncodingType.URL_ENCODED)]  # an HTML form's fields


class LoginRequired(Exception):
    """A page asked for without a valid key off loopback: the handler sends the browser to /login."""


class PageForbidden(Exception):
    """An operator page asked for by a customer: a 403 page."""


async def viewer_for(rt: Runtime, key: str) -> Viewer | None:
    if hmac.compare_digest(key.encode(), rt.local_key.encode()):
        return Viewer(DEV_USER_ID, True)
    found = await rt.reader(records.viewer_for_key, key)
    return Viewer(found.user_id, found.operator) if found is not None else None


async def page_viewer(request: AnyRequest, state: State) -> Viewer:
    """The viewer of a page, or LoginRequired (a key that stopped working counts as logged out)."""
    rt: Runtime = state.rt
    key = request.cookies.get(KEY_COOKIE)
    if key:
        viewer = await viewer_for(rt, key)
        if viewer is not None:
            return viewer
    elif rt.config.dev_user_allowed:
        return Viewer(DEV_USER_ID, True)
    raise LoginRequired()


async def page_operator(request: AnyRequest, state: State) -> Viewer:
    viewer = await page_viewer(request, state)
    if not viewer.operator:
        raise PageForbidden()
    return viewer


def to_login(request: AnyRequest, _: LoginRequired) -> Response[Any]:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    response: Response[Any] = Redirect(f"/login?next={quote(target, safe='')}", status_code=303)
    if request.cookies.get(KEY_COOKIE):
        response.delete_cookie(KEY_COOKIE, path="/")
    if request.headers.get("hx-request"):  # an htmx fragment: move the whole page
        response = Response(b"", status_code=200, headers={"HX-Redirect": "/login"})
    return response


def forbidden(request: AnyRequest, _: PageForbidden) -> Response[Any]:
    return Template(
        "error.html",
        status_code=403,
        context={
            "viewer": None,
            "title": "Operators only",
            "message": "This page is for operators. Log in with the key of a user created with "
            "`customify users create EMAIL --operator`.",
        },
    )


def safe_next(target: str | None) -> str:
    """Only a path on this site (never //host or a scheme): no open redirect."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def secure_cookies(request: AnyRequest, rt: Runtime) -> bool:
    return request.url.scheme == "https" or rt.config.base_url.startswith("https://")


class LoginController(Controller):
    path = "/"
    include_in_schema = False

    @get("/login")
    async def login_page(
        self,
        state: State,
        next_: Annotated[str | None, QueryParameter(name="next", max_length=2000)] = None,
    ) -> Template:
        rt: Runtime = state.rt
        return Template(
            "login.html",
            context={"viewer": None, "next": safe_next(next_), "error": None, "dev_mode": rt.config.dev_user_allowed},
        )

    @post("/login", status_code=303)
    async def login(self, request: AnyRequest, state: State, data: Form) -> Response[Any]:
        rt: Runtime = state.rt
        key, target = (data.get("key") or "").strip(), safe_next(data.get("next"))
        viewer = await viewer_for(rt, key) if key and len(key) <= 200 else None
        if viewer is None:
            # No detail of why: an unknown key and a malformed one read the same.
            return Template(
                "login.html",
                status_code=401,
                context={
                    "viewer": None,
                    "next": target,
                    "error": "That key was not accepted.",
                    "dev_mode": rt.config.dev_user_allowed,
                },
            )
        return Redirect(
            target,
            status_code=303,
            cookies=[
                Cookie(
                    key=KEY_COOKIE,
                    value=key,
                    path="/",
                    httponly=True,
                    samesite="strict",
                    secure=secure_cookies(request, rt),
                )
            ],
        )

    @post("/logout", status_code=303)
    async def logout(self) -> Response[Any]:
        response: Response[Any] = Redirect("/login", status_code=303)
        response.delete_cookie(KEY_COOKIE, path="/")
        return response
