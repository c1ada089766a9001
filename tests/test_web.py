"""The web pages at `/`, server side: the dev user, a customer, an operator; 403s, login, CSRF, escaping."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from customify import records
from tests.conftest import LiveApp, eventually, hold_renders, png_bytes

HTML = {"Accept": "text/html"}
XSS = "<script>alert(1)</script>"


def user(app: LiveApp, email: str, operator: bool = False) -> str:
    with app.rt.transaction() as session:
        _, key = records.create_user(session, email, operator)
    return key


def browser(app: LiveApp) -> httpx.Client:
    """A client that behaves like a browser page: asks for HTML, keeps cookies, sends its Origin on posts."""
    return httpx.Client(base_url=app.base_url, headers={**HTML, "Origin": app.base_url}, timeout=30)


def token(client: httpx.Client, page: str = "/designs/new") -> str:
    """The CSRF token, as a page hands it to its forms."""
    response = client.get(page)
    assert response.status_code == 200, response.text
    found = re.search(r'name="_csrf_token" value="([0-9a-f]+)"', response.text)
    assert found, "the page's forms carry no CSRF token"
    return found.group(1)


def login(client: httpx.Client, key: str) -> httpx.Response:
    return client.post("/login", data={"key": key, "next": "/designs", "_csrf_token": token(client, "/login")})


@pytest.fixture
def keyed(make_live: Callable[..., LiveApp]) -> LiveApp:
    """An app that needs keys, as off loopback (dev_mode off)."""
    return make_live(dev_mode="off")


def test_every_page_answers_for_the_dev_user(live: LiveApp) -> None:
    design = live.wait(live.design(name="Club shirt")["id"])
    with browser(live) as web:
        overview = web.get("/")
        assert overview.status_code == 200
        assert "Overview" in overview.text and ">healthy<" in overview.text
        assert "None: workers are consuming." in overview.text and "Worker-1" in overview.text
        gallery = web.get("/designs")
        assert gallery.status_code == 200 and "Club shirt" in gallery.text
        assert f"/designs/{design['id']}/thumbnail?v=1" in gallery.text and "published" in gallery.text
        detail = web.get(f"/designs/{design['id']}")
        assert detail.status_code == 200
        assert "Task timeline" in detail.text and "render_design_preview" in detail.text and "HELLO" in detail.text
        assert web.get("/designs/new").status_code == 200
        operators = web.get("/operators")
        assert operators.status_code == 200 and "Type <kbd>purge</kbd> to empty" in operators.text
        thumb = web.get(f"/designs/{design['id']}/thumbnail")
        assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/webp"
        assert web.get(f"/designs/{design['id']}/preview.png").content.startswith(b"\x89PNG")
        icon = web.get("/favicon.ico")
        assert icon.status_code == 200 and icon.headers["content-type"] == "image/x-icon"
        htmx = web.get("/static/htmx.min.js")
        assert htmx.status_code == 200 and "htmx 2.0.11" in htmx.text[:200]
        assert "dev user" in overview.text and "/login" not in overview.text
        assert "script-src 'self'" in overview.headers["content-security-policy"]
        assert "frame-ancestors 'none'" in overview.headers["content-security-policy"]


def test_gallery_filters_searches_and_pages(live: LiveApp) -> None:
    for i in range(30):
        live.design(name=f"Shirt {i:02d}")
    live.design(name="Mug for mum", product="mug", color="#ffffff")
    with browser(live) as web:
        first = web.get("/designs")
        assert first.text.count('class="card"') == 24 and "Mug for mum" in first.text  # newest first
        more = re.search(r'id="more"[^>]*href="([^"]+)"', first.text)
        assert more, "no link to the next page"
        second = web.get(more.group(1).replace("&amp;", "&"), headers={"HX-Request": "true", "HX-Target": "more"})
        assert second.text.count('class="card"') == 7 and "<html" not in second.text
        boosted = web.get("/designs", headers={"HX-Request": "true", "HX-Boosted": "true"})  # after a delete
        assert "<html" in boosted.text
        found = web.get("/designs", params={"q": "mum"})
        assert found.text.count('class="card"') == 1 and "Mug for mum" in found.text
        assert 'class="card"' not in web.get("/designs", params={"status": "failed"}).text
        assert web.get("/designs", params={"q": "%"}).text.count('class="card"') == 0  # LIKE wildcards are literal


def test_script_in_names_and_text_is_escaped_everywhere(live: LiveApp) -> None:
    design = live.wait(live.design(name=XSS, layers=[{"type": "text", "text": f"hi {XSS}", "size": 0.1}])["id"])
    with browser(live) as web:
        for page in (
            "/",
            "/designs",
            f"/designs/{design['id']}",
            f"/designs/{design['id']}/card",
            "/designs?q=%3Cscript%3E",
        ):
            body = web.get(page).text
            assert "<script>alert" not in body, page
            assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body, page
        # The search box echoes what was typed, escaped.
        echoed = web.get("/designs", params={"q": '"><script>alert(2)</script>'}).text
        assert "<script>alert(2)" not in echoed and "&#34;&gt;&lt;script&gt;alert(2)" in echoed


def test_unknown_pages_are_html_for_browsers_and_problems_for_the_api(live: LiveApp) -> None:
    page = live.client.get("/no/such/page", headers=HTML)
    assert page.status_code == 404 and page.headers["content-type"].startswith("text/html")
    assert "Page not found" in page.text
    api = live.client.get("/api/v1/nothing", headers=HTML)
    assert api.status_code == 404 and api.headers["content-type"] == "application/problem+json"
    script = live.client.get("/no/such/page")  # no Accept: text/html, e.g. curl
    assert script.headers["content-type"] == "application/problem+json"
    missing = live.client.get("/designs/00000000-0000-4000-8000-00000000abcd", headers=HTML)
    assert missing.status_code == 404 and "No such design" in missing.text


def test_state_changes_need_the_csrf_token(live: LiveApp) -> None:
    assert live.rt.consumer is not None
    with browser(live) as web:
        web.get("/")  # has the CSRF cookie now, as a browser would
        form = {"name": "No token", "product": "tshirt", "color": "#1e3a8a"}
        assert web.post("/designs/new", data=form, files={"image": ("", b"")}).status_code == 403
        assert live.client.get("/api/v1/designs").json()["items"] == []
        refused = web.post("/operators/pause", data={})
        assert refused.status_code == 403 and "security token" in refused.text
        assert web.post("/operators/pause", data={"_csrf_token": "0" * 128}).status_code == 403
        assert not live.rt.consumer.paused
        done = web.post("/operators/pause", data={"_csrf_token": token(web)})
        assert done.status_code == 303 and done.headers["location"] == "/operators?done=pause"
        assert live.rt.consumer.paused
        banner = web.get("/designs").text
        assert re.search(r'id="paused-banner"[^>]*role="status"\s*>', banner), "the pause banner is hidden"
        assert web.post("/operators/resume", headers={"x-csrftoken": token(web)}).status_code == 303  # htmx way
        assert not live.rt.consumer.paused
        assert re.search(r'id="paused-banner"[^>]*hidden', web.get("/designs").text)


def test_create_rerender_and_delete_from_the_pages(live: LiveApp) -> None:
    with browser(live) as web:
        csrf = token(web)
        refused = web.post(
            "/designs/new",
            data={"name": "", "product": "tshirt", "color": "#1e3a8a", "_csrf_token": csrf},
            files={"image": ("", b"")},
        )
        assert refused.status_code == 422 and "Not created" in refused.text
        bad_image = web.post(
            "/designs/new",
            data={"name": "Bad", "product": "tshirt", "color": "#1e3a8a", "_csrf_token": csrf},
            files={"image": ("x.png", b"not an image", "image/png")},
        )
        assert bad_image.status_code == 422 and "not a PNG, JPEG or WebP" in bad_image.text
        created = web.post(
            "/designs/new",
            data={
                "name": "From the form",
                "product": "mug",
                "color": "#ffffff",
                "text1": "MUM",
                "text2": "",
                "font": "DejaVu Serif",
                "text_color": "#ff0000",
                "_csrf_token": csrf,
            },
            files={"image": ("dot.png", png_bytes((40, 40)), "image/png")},
        )
        assert created.status_code == 303, created.text
        design_id = created.headers["location"].rsplit("/", 1)[-1]
        design = live.wait(design_id)
        assert design["status"] == "published" and design["name"] == "From the form"
        assert [layer["type"] for layer in design["layers"]] == ["text", "image"]
        assert design["layers"][0]["font"] == "DejaVu Serif" and design["layers"][0]["color"] == "#ff0000"
        again = web.post(f"/designs/{design_id}/render", data={"_csrf_token": csrf})
        assert again.status_code == 303
        rerendered = eventually(lambda: (d := live.wait(design_id))["version"] == 2 and d["status"] == "published")
        assert rerendered
        gone = web.post(f"/designs/{design_id}/delete", data={"_csrf_token": csrf})
        assert gone.status_code == 303 and gone.headers["location"] == "/designs"
        assert live.client.get(f"/api/v1/designs/{design_id}").status_code == 404


def test_login_off_loopback(keyed: LiveApp) -> None:
    key = user(keyed, "ann@example.com")
    with browser(keyed) as web:
        first = web.get("/designs?status=draft")
        assert first.status_code == 303 and first.headers["location"] == "/login?next=%2Fdesigns%3Fstatus%3Ddraft"
        assert web.get("/login").status_code == 200
        wrong = login(web, "cfy_wrong")
        assert wrong.status_code == 401 and "That key was not accepted." in wrong.text
        assert "customify_key" not in web.cookies
        no_token = web.post("/login", data={"key": key})
        assert no_token.status_code == 403  # login forms are CSRF-checked too
        ok = login(web, key)
        assert ok.status_code == 303 and ok.headers["location"] == "/designs"
        cookie = ok.headers["set-cookie"]
        assert "customify_key=" in cookie and "HttpOnly" in cookie and "samesite=strict" in cookie.lower()
        assert "secure" not in cookie.lower()  # served over http here
        assert web.get("/designs").status_code == 200
        # The cookie reads the API (the event stream, previews), never writes to it.
        assert web.get("/api/v1/designs").status_code == 200
        write = web.post("/api/v1/designs", json={"name": "x", "product": "tshirt", "color": "#1e3a8a"})
        assert write.status_code == 401
        assert "Log out" in web.get("/").text
        out = web.post("/logout", data={"_csrf_token": token(web, "/")})
        assert out.status_code == 303 and out.headers["location"] == "/login"
        assert web.get("/").status_code == 303
        # An open redirect through ?next= is not possible.
        with httpx.Client(base_url=keyed.base_url) as other:
            assert login(other, key).headers["location"] == "/designs"
        sneaky = web.post("/login", data={"key": key, "next": "//evil.example/x", "_csrf_token": token(web, "/login")})
        assert sneaky.headers["location"] == "/"


def test_customer_sees_only_their_designs_and_no_operator_pages(keyed: LiveApp) -> None:
    ann, bob, ops = user(keyed, "ann@example.com"), user(keyed, "bob@example.com"), user(keyed, "ops@example.com", True)
    mine = keyed.client.post(
        "/api/v1/designs",
        headers={"Authorization": f"Bearer {ann}"},
        json={"name": "Ann's shirt", "product": "tshirt", "color": "#1e3a8a"},
    ).json()
    theirs = keyed.client.post(
        "/api/v1/designs",
        headers={"Authorization": f"Bearer {bob}"},
        json={"name": "Bob's mug", "product": "mug", "color": "#ffffff"},
    ).json()
    with browser(keyed) as web:
        login(web, ann)
        gallery = web.get("/designs").text
        assert "Ann&#39;s shirt" in gallery and "Bob" not in gallery
        assert "Bob" not in web.get("/designs?owner=all").text  # not an operator: still only hers
        assert web.get(f"/designs/{theirs['id']}").status_code == 404
        assert web.get(f"/designs/{theirs['id']}/thumbnail").status_code == 404
        assert web.get(f"/designs/{theirs['id']}/card").text == ""
        csrf = token(web, "/")
        assert web.post(f"/designs/{theirs['id']}/delete", data={"_csrf_token": csrf}).status_code == 404
        assert web.get(f"/designs/{mine['id']}").status_code == 200
        forbidden = web.get("/operators")
        assert forbidden.status_code == 403 and "for operators" in forbidden.text
        assert web.post("/operators/pause", data={"_csrf_token": csrf}).status_code == 403
        overview = web.get("/").text
        assert 'href="/operators"' not in overview and "Worker-1" not in overview
    with browser(keyed) as web:
        login(web, ops)
        every = web.get("/designs?owner=all").text
        assert "Ann&#39;s shirt" in every and "Bob&#39;s mug" in every and "bob@example.com" in every
        assert "Bob" not in web.get("/designs").text  # the operator's own designs by default
        assert web.get(f"/designs/{theirs['id']}").status_code == 200
        assert web.get("/operators").status_code == 200


def test_api_lists_every_users_designs_for_operators_only(keyed: LiveApp) -> None:
    ann, ops = user(keyed, "ann@example.com"), user(keyed, "ops@example.com", True)

    def get(key: str, path: str, **params: Any) -> httpx.Response:
        return keyed.client.get(path, params=params, headers={"Authorization": f"Bearer {key}"})

    design = keyed.client.post(
        "/api/v1/designs",
        headers={"Authorization": f"Bearer {ann}"},
        json={"name": "Ann's", "product": "tshirt", "color": "#1e3a8a"},
    ).json()
    assert [d["id"] for d in get(ops, "/api/v1/designs", owner="all").json()["items"]] == [design["id"]]
    assert get(ops, "/api/v1/designs").json()["items"] == []
    assert get(ann, "/api/v1/designs", owner="all").status_code == 403
    assert get(ops, f"/api/v1/designs/{design['id']}").status_code == 404
    assert get(ops, f"/api/v1/designs/{design['id']}", owner="all").json()["name"] == "Ann's"
    assert get(ann, f"/api/v1/designs/{design['id']}", owner="all").status_code == 403
    assert get(ops, "/api/v1/designs", owner="some").status_code == 400


def test_operator_actions_from_the_page(live: LiveApp) -> None:
    assert live.rt.consumer is not None
    with browser(live) as web:
        csrf = token(web, "/operators")
        assert web.post("/operators/workers", data={"threads": "3", "_csrf_token": csrf}).status_code == 303
        assert eventually(lambda: live.rt.consumer is not None and live.rt.consumer.workers == 3)
        assert web.post("/operators/workers", data={"threads": "0", "_csrf_token": csrf}).status_code == 422
        web.post("/operators/pause", data={"_csrf_token": csrf})
        design = live.design()

        def pending_page() -> str | None:
            text = web.get("/operators").text
            return text if "Revoke</button>" in text else None

        page = eventually(pending_page)
        task_id = re.search(r"/operators/pending/([^/]+)/revoke", page)
        assert task_id
        assert web.post(f"/operators/pending/{task_id.group(1)}/revoke", data={"_csrf_token": csrf}).status_code == 303
        assert ">revoked<" in web.get("/operators").text
        live.design()
        refused = web.post("/operators/purge", data={"confirm": "yes", "_csrf_token": csrf})
        assert refused.headers["location"] == "/operators?done=purge-refused"
        assert "type purge to confirm" in web.get(refused.headers["location"]).text
        assert web.post("/operators/purge", data={"confirm": "purge", "_csrf_token": csrf}).status_code == 303
        assert "Nothing pending." in web.get("/operators").text
        stack = web.get("/operators/workers/Worker-1/stack")
        assert stack.status_code == 200 and "Live stack of Worker-1" in stack.text and "File " in stack.text
        assert web.get("/operators/workers/nobody/stack").status_code == 404
        web.post("/operators/resume", data={"_csrf_token": csrf})
        assert design["status"] == "draft"


def test_an_api_only_process_shows_the_deployment(make_live: Callable[..., LiveApp]) -> None:
    app = make_live(consumer=False)
    with browser(app) as web:
        overview = web.get("/")
        assert overview.status_code == 200 and "Overview" in overview.text
        operators = web.get("/operators")
        assert operators.status_code == 200 and "This process runs no consumer" in operators.text
        assert 'action="/operators/pause"' not in operators.text


def test_the_live_stack_of_a_busy_thread(live: LiveApp, monkeypatch: pytest.MonkeyPatch) -> None:
    release, entered = hold_renders(monkeypatch)
    design = live.design(name="stuck for a moment")
    assert entered.wait(20)
    try:
        with browser(live) as web:
            busy = eventually(
                lambda: next((t for t in live.rt.observer.threads_snapshot() if t["state"] == "busy"), None)
            )
            page = web.get(f"/operators/workers/{busy['name']}/stack")
            assert page.status_code == 200 and 'hx-trigger="every 1s"' in page.text
            assert "busy: render_design_preview" in page.text and design["id"][:8] in page.text
            assert "in held" in page.text and "release.wait(timeout)" in page.text  # where it waits, live
            fragment = web.get(
                f"/operators/workers/{busy['name']}/stack", headers={"HX-Request": "true", "HX-Target": "stack"}
            )
            assert "<html" not in fragment.text and "in held" in fragment.text
    finally:
        release.set()
    assert live.wait(design["id"])["status"] == "published"


def test_the_create_form_keeps_the_apis_limits(make_live: Callable[..., LiveApp]) -> None:
    app = make_live(dev_mode="off", limits={"designs_per_minute": 1})
    key = user(app, "ann@example.com")
    with browser(app) as web:
        login(web, key)
        form = {"name": "One", "product": "tshirt", "color": "#1e3a8a", "_csrf_token": token(web)}
        assert web.post("/designs/new", data=form, files={"image": ("", b"")}).status_code == 303
        again = web.post("/designs/new", data=dict(form, name="Two"), files={"image": ("", b"")})
        assert again.status_code == 422 and "limits.designs_per_minute = 1" in again.text
    assert len(app.client.get("/api/v1/designs", headers={"Authorization": f"Bearer {key}"}).json()["items"]) == 1


def test_presigned_previews_may_come_from_the_bucket(make_config: Callable[..., Any]) -> None:
    from customify import web

    csp = web.headers(make_config(storage={"serve": "redirect"}))["Content-Security-Policy"]
    assert "img-src * data:" in csp and "script-src 'self'" in csp  # images from the bucket, scripts still ours
    assert "img-src 'self' data:" in web.headers(make_config())["Content-Security-Policy"]
