"""The web pages in a real browser: Debian's Chromium, driven by Playwright for Python (its own browsers are
never downloaded). A screenshot of each page goes to $CUSTOMIFY_SCREENSHOTS or a temporary directory."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from customify import records
from tests.conftest import LiveApp

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SECONDS = 10_000  # ms: what "within a few seconds" means on a busy shared machine

playwright_api = pytest.importorskip(
    "playwright.sync_api", reason="Playwright for Python is not installed (pip install -e '.[test]')"
)
if not os.path.exists(CHROMIUM):
    pytest.skip("no Chromium: `apt-get install -y chromium` (.ci/run does it when missing)", allow_module_level=True)

expect = playwright_api.expect


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    where = os.environ.get("CUSTOMIFY_SCREENSHOTS")
    path = Path(where) if where else tmp_path_factory.mktemp("screenshots")
    path.mkdir(parents=True, exist_ok=True)
    print(f"screenshots in {path}")
    return path


class Tab:
    """A page with its console errors collected."""

    def __init__(self, browser: Any, base_url: str, shots: Path, **context: Any) -> None:
        self.context = browser.new_context(base_url=base_url, **context)
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.shots = shots
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(f"uncaught: {e}"))

    def live(self) -> None:
        """Wait until the event stream is open."""
        expect(self.page.locator("#live")).to_have_text("live", timeout=SECONDS)

    def shot(self, name: str) -> None:
        self.page.screenshot(path=str(self.shots / f"{name}.png"), full_page=True)


@pytest.fixture
def tab(chromium: Any, shots: Path) -> Iterator[Callable[..., Tab]]:
    tabs: list[Tab] = []

    def make(app: LiveApp, **context: Any) -> Tab:
        tab = Tab(chromium, app.base_url, shots, **context)
        tabs.append(tab)
        return tab

    yield make
    for t in tabs:
        t.context.close()


def test_a_design_appears_and_turns_published_without_a_reload(live: LiveApp, tab: Callable[..., Tab]) -> None:
    t = tab(live, viewport={"width": 1280, "height": 800})
    page = t.page
    streams: list[str] = []
    page.on("request", lambda r: streams.append(r.url) if "/api/v1/events" in r.url else None)
    page.goto("/")
    t.live()
    expect(page.locator("#health")).to_have_text("healthy")
    # One stream per tab, asking from the event id the page was rendered at (nothing in between is lost).
    assert len(streams) == 1 and "last_event_id=" in streams[0], streams
    t.shot("overview")
    page.goto("/designs")
    t.live()
    page.evaluate("window.notReloaded = true")
    design = live.design(name="<script>window.pwned = true</script>Live shirt")
    card = page.locator(f"#d-{design['id']}")
    expect(card).to_be_visible(timeout=SECONDS)
    expect(card.locator(".badge")).to_have_text("published", timeout=SECONDS)
    thumb = card.locator("img")
    expect(thumb).to_have_attribute("src", f"/designs/{design['id']}/thumbnail?v=1")
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=thumb.element_handle(), timeout=SECONDS)
    assert page.evaluate("window.notReloaded === true"), "the page reloaded"
    assert page.evaluate("window.pwned === undefined"), "a design name ran as a script"
    expect(card.locator(".name")).to_have_text("<script>window.pwned = true</script>Live shirt")
    t.shot("designs")
    page.click(f"#d-{design['id']} .name")
    expect(page.locator("h1")).to_have_text("<script>window.pwned = true</script>Live shirt")
    expect(page.locator(".preview img")).to_be_visible()
    page.wait_for_function("() => document.querySelector('.preview img').naturalWidth > 0", timeout=SECONDS)
    t.shot("design")
    page.goto("/designs/new")
    t.shot("new")
    page.fill("input[name=name]", "Typed in the browser")
    page.select_option("#product", "mug")
    page.fill("input[name=text1]", "MUM")
    page.click("button[type=submit].primary")
    expect(page.locator("h1")).to_have_text("Typed in the browser")
    expect(page.locator("#panel .badge").first).to_have_text("published", timeout=SECONDS)
    page.goto("/operators")
    t.shot("operators")
    page.goto("/no/such/page")
    expect(page.locator("h1")).to_have_text("Page not found")
    t.shot("not-found")
    t.errors = [e for e in t.errors if "404" not in e]  # the 404 page itself is the one expected error
    assert t.errors == []


def test_search_filter_and_delete_in_the_gallery(live: LiveApp, tab: Callable[..., Tab]) -> None:
    mug = live.wait(live.design(name="Mug for mum", product="mug", color="#ffffff")["id"])
    shirt = live.wait(live.design(name="Club shirt")["id"])
    t = tab(live, viewport={"width": 1280, "height": 800})
    page = t.page
    page.on("dialog", lambda dialog: dialog.accept())  # "Delete this design and its files?"
    page.goto("/designs")
    t.live()
    page.focus("#q")  # by keyboard: search box → "every user's" → the newest card's name (one stop per card)
    page.keyboard.press("Tab")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.className") == "name"
    page.keyboard.press("Enter")
    expect(page).to_have_url(f"{live.base_url}/designs/{shirt['id']}")
    page.go_back()
    t.live()
    page.evaluate("window.notReloaded = true")
    page.fill("#q", "mum")
    expect(page.locator("#cards .card")).to_have_count(1, timeout=SECONDS)
    expect(page.locator(f"#d-{mug['id']}")).to_be_visible()
    expect(page).to_have_url(f"{live.base_url}/designs?status=&q=mum")
    page.fill("#q", "")
    page.select_option("#status", "failed")
    expect(page.locator("#cards .card")).to_have_count(0, timeout=SECONDS)
    expect(page.locator("#cards .empty")).to_have_text("No designs match.")
    assert page.evaluate("window.notReloaded === true"), "filtering reloaded the page"
    for i in range(30):  # more than a page: the rest arrives as the end of the page scrolls into view
        live.design(name=f"Shirt {i:02d}")
    page.goto("/designs")
    expect(page.locator("#cards .card")).to_have_count(24)
    page.locator("#more").scroll_into_view_if_needed()
    expect(page.locator("#cards .card")).to_have_count(32, timeout=SECONDS)
    expect(page.locator("#more")).to_have_count(0)
    page.goto(f"/designs/{shirt['id']}")
    page.click("button.danger")
    expect(page).to_have_url(f"{live.base_url}/designs", timeout=SECONDS)
    expect(page.locator("h1")).to_have_text("Designs")
    expect(page.locator(f"#d-{shirt['id']}")).to_have_count(0)
    expect(page.locator("#cards .card")).to_have_count(24)
    assert live.client.get(f"/api/v1/designs/{shirt['id']}").status_code == 404
    assert t.errors == []


def test_the_create_form_previews_as_you_type(live: LiveApp, tab: Callable[..., Tab]) -> None:
    if live.client.get("/api/v1/previews", params={"spec": "e30"}).status_code == 404:
        pytest.skip("this build has no GET /api/v1/previews (the instant preview endpoint)")
    t = tab(live, viewport={"width": 1280, "height": 800})
    page = t.page
    previews: list[str] = []
    page.on("response", lambda r: previews.append(f"{r.status} {r.url}") if "/api/v1/previews" in r.url else None)
    page.goto("/designs/new")
    instant = page.locator("#live-preview")
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=instant.element_handle(), timeout=SECONDS)
    first = instant.get_attribute("src")
    page.fill("input[name=text1]", "TYPED")
    expect(instant).not_to_have_attribute("src", first or "", timeout=SECONDS)
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=instant.element_handle(), timeout=SECONDS)
    assert all(p.startswith("200 ") for p in previews), previews
    t.shot("new-instant-preview")
    assert t.errors == []


def test_phone_width_and_dark_scheme(live: LiveApp, tab: Callable[..., Tab]) -> None:
    live.wait(live.design(name="A rather long design name that has to wrap on a phone")["id"])
    t = tab(live, viewport={"width": 390, "height": 844}, color_scheme="dark", is_mobile=True)
    for path, name in (("/", "phone-overview"), ("/designs", "phone-designs")):
        t.page.goto(path)
        t.live()
        width = t.page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, f"{path} scrolls sideways on a phone ({width} px)"
        t.shot(name)
    background = t.page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert background == "rgb(17, 19, 24)", background  # the dark palette
    t.page.keyboard.press("Tab")
    t.page.keyboard.press("Tab")
    focused = t.page.evaluate("document.activeElement.textContent.trim()")
    outline = t.page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert focused == "Customify" and outline == "solid", (focused, outline)  # visible focus
    assert t.errors == []


def test_pause_from_the_page_shows_the_banner(live: LiveApp, tab: Callable[..., Tab]) -> None:
    t = tab(live, viewport={"width": 1280, "height": 800})
    other = tab(live)
    other.page.goto("/designs")
    other.live()
    t.page.goto("/operators")
    t.live()
    expect(t.page.locator("#paused-banner")).to_be_hidden()
    t.page.click("#pause")
    expect(t.page.locator("#paused-banner")).to_be_visible(timeout=SECONDS)
    expect(t.page.locator("#paused-banner")).to_contain_text("consuming is paused")
    assert live.rt.consumer is not None and live.rt.consumer.paused
    t.shot("paused")
    # Another open page hears it on the event stream.
    expect(other.page.locator("#paused-banner")).to_be_visible(timeout=SECONDS)
    t.page.click("#paused-banner button")
    expect(t.page.locator("#paused-banner")).to_be_hidden(timeout=SECONDS)
    expect(other.page.locator("#paused-banner")).to_be_hidden(timeout=SECONDS)
    assert not live.rt.consumer.paused
    assert t.errors == [] and other.errors == []


def test_overview_turns_red_with_the_health_rules_words_and_clears(live: LiveApp, tab: Callable[..., Tab]) -> None:
    t = tab(live, viewport={"width": 1280, "height": 800})
    t.page.goto("/")
    t.live()
    expect(t.page.locator("#health")).to_have_text("healthy")
    live.rt.stop_consumer()
    design = live.design(name="nobody will take me")
    problems = t.page.locator("#problems")
    expect(problems).to_contain_text("no live worker thread", timeout=SECONDS)
    expect(t.page.locator("#health")).to_have_text("failing")
    expect(t.page.locator("#health")).to_have_class(re.compile(r"\bbad\b"))
    health = live.client.get("/api/v1/system/health").json()
    assert health["status"] == "failing"  # the page and health say the same
    expect(t.page.locator("[data-q=pending]")).to_have_text("1", timeout=SECONDS)
    t.shot("overview-failing")
    live.rt.start_consumer()
    expect(t.page.locator("#health")).to_have_text("healthy", timeout=SECONDS)
    expect(problems).to_have_text("None: workers are consuming.")
    assert live.wait(design["id"])["status"] == "published"
    assert t.errors == []


def test_login_off_loopback(make_live: Callable[..., LiveApp], tab: Callable[..., Tab]) -> None:
    app = make_live(dev_mode="off")
    with app.rt.transaction() as session:
        _, key = records.create_user(session, "ann@example.com")
    t = tab(app, viewport={"width": 1280, "height": 800})
    page = t.page
    page.goto("/designs")
    expect(page).to_have_url(f"{app.base_url}/login?next=%2Fdesigns")
    t.shot("login")
    page.fill("input[name=key]", "cfy_not_a_key")
    page.click("button[type=submit]")
    expect(page.locator("#login-error")).to_have_text("That key was not accepted.")
    page.fill("input[name=key]", key)
    page.click("button[type=submit]")
    expect(page).to_have_url(f"{app.base_url}/designs")
    t.live()  # the event stream accepted the cookie
    cookie = next(c for c in t.context.cookies() if c["name"] == "customify_key")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert page.evaluate("document.cookie").find("customify_key") == -1  # scripts cannot read it
    page.goto("/operators")
    expect(page.locator("h1")).to_have_text("Operators only")
    page.goto("/")
    page.click("text=Log out")
    expect(page).to_have_url(f"{app.base_url}/login")
    t.errors = [e for e in t.errors if "401" not in e and "403" not in e]  # the refused key, the 403 page
    assert t.errors == []


def test_unreachable_api_greys_the_page(live: LiveApp, tab: Callable[..., Tab]) -> None:
    live.wait(live.design()["id"])
    t = tab(live, viewport={"width": 1280, "height": 800})
    t.page.goto("/designs")
    t.live()
    live.server.should_exit = True  # the server goes away (as `customify run` stops it); the page stays open
    live.rt.hub.close()
    live.thread.join(15)
    expect(t.page.locator("#offline-banner")).to_be_visible(timeout=SECONDS)
    expect(t.page.locator("#offline-banner")).to_contain_text("old")
    assert t.page.evaluate("document.body.classList.contains('stale')")
    expect(t.page.locator("#live")).to_have_text("unreachable")
    t.shot("unreachable")
