"""Screens over the main one: a design's detail, help, a worker's stack, confirmations and prompts;
and `DesignActionsScreen`, the keys that act on one design (the main screen and the detail screen both
have them; each says which design is selected)."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar

from PIL import Image
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.css.query import NoMatches
from textual.screen import ModalScreen, Screen
from textual.widgets import DataTable, Footer, Input, Label, Static

from tui.client import ApiClient
from tui.feed import describe_error
from tui.state import STATUS_COLORS, DashboardState, dict_of, fmt_ms, list_of, short_id, text
from tui.widgets import TASK_LABELS, HalfBlockImage


class ConfirmScreen(ModalScreen[bool]):
    """y / n."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "answer(True)", "Yes"),
        Binding("n,escape", "answer(False)", "No"),
    ]

    def __init__(self, question: str) -> None:
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self.question)
            yield Label("[b]y[/b] yes   [b]n[/b] / escape no", classes="hint")

    def action_answer(self, value: bool) -> None:
        self.dismiss(value)


class PromptScreen(ModalScreen[str | None]):
    """One line of input; `check` returns an error in words, or None when the answer is acceptable."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]

    def __init__(
        self, question: str, placeholder: str = "", check: Callable[[str], str | None] | None = None, value: str = ""
    ) -> None:
        super().__init__()
        self.question = question
        self.placeholder = placeholder
        self.check = check
        self.value = value

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self.question)
            yield Input(value=self.value, placeholder=self.placeholder, id="prompt-input")
            yield Label("", id="prompt-error", classes="error")
            yield Label("enter to confirm, escape to cancel", classes="hint")

    def on_mount(self) -> None:
        field = self.query_one(Input)
        field.cursor_blink = False
        field.focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        error = self.check(event.value) if self.check else None
        if error:
            self.query_one("#prompt-error", Label).update(error)
            return
        self.dismiss(event.value)

    def action_cancel(self) -> None:
        self.dismiss(None)


class HelpScreen(ModalScreen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,q,question_mark", "app.pop_screen", "Close")]

    def __init__(self, bindings: list[tuple[str, str]]) -> None:
        super().__init__()
        self.rows = bindings

    def compose(self) -> ComposeResult:
        table = Table(box=None, show_header=False, padding=(0, 2))
        table.add_column(style="bold cyan", no_wrap=True)
        table.add_column()
        for key, what in self.rows:
            table.add_row(key, what)
        with VerticalScroll(classes="dialog wide"):
            yield Label("[b]Customify dashboard[/b] — every action is also an HTTP endpoint (see /schema)")
            yield Static(table)
            yield Label(
                "Red means the server found a problem: the reason is in words next to it. "
                "Grey means the data is old: the API is unreachable and the age is in the header.",
                classes="hint",
            )


class StackScreen(ModalScreen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,q", "app.pop_screen", "Close")]

    def __init__(self, stack: dict[str, Any]) -> None:
        super().__init__()
        self.stack = stack

    def compose(self) -> ComposeResult:
        stack = self.stack
        title = (
            f"[b]{text(stack.get('worker'))}[/b] {text(stack.get('state'))} "
            f"{TASK_LABELS.get(text(stack.get('task'), ''), text(stack.get('task'), ''))} "
            f"{short_id(stack.get('design_id'))}"
        )
        lines = [str(line) for line in list_of(stack.get("stack"))]
        with VerticalScroll(classes="dialog wide"):
            yield Label(title)
            yield Static(Text("\n".join(lines[-60:]) or "no stack", style="dim"), id="stack-text")


class DesignActionsScreen(Screen[None]):
    """A screen with a selected design, and the keys that act on it (retry, re-render, delete, revoke,
    open the preview, copy the id, a worker's stack). API calls run off the key handler (`act`)."""

    def __init__(self, client: ApiClient, state: DashboardState) -> None:
        super().__init__()
        self.client = client
        self.state = state

    def selected_design_id(self) -> str | None:
        raise NotImplementedError

    def selected_design(self) -> dict[str, Any] | None:
        design_id = self.selected_design_id()
        return None if design_id is None else self.state.designs.get(design_id, {"id": design_id})

    def act(self, work: Callable[[], Awaitable[str | None]]) -> None:
        """Run an API action off the key handler; its outcome (or error) becomes a notification.
        The worker is the app's: it outlives this screen (deleting from the detail screen closes it)."""
        app = self.app

        async def run() -> None:
            try:
                done = await work()
            except Exception as exc:
                app.notify(describe_error(exc), title="failed", severity="error")
                return
            if done:
                app.notify(done)

        app.run_worker(run(), group="action")

    def need_design(self) -> dict[str, Any] | None:
        design = self.selected_design()
        if design is None:
            self.app.notify("no design selected", severity="warning")
        return design

    def action_retry(self) -> None:
        design = self.need_design()
        if design is None:
            return
        if design.get("status") != "failed":
            self.app.notify(
                f"{short_id(design['id'])} is {text(design.get('status'))}, not failed; R re-renders any design",
                severity="warning",
            )
            return
        self.action_rerender()

    def action_rerender(self) -> None:
        design = self.need_design()
        if design is None:
            return

        async def work() -> str:
            result = await self.client.rerender(design["id"])
            return f"render queued for {short_id(design['id'])} (version {result.get('version', '?')})"

        self.act(work)

    def action_delete(self) -> None:
        design = self.need_design()
        if design is None:
            return
        app = self.app

        def answered(yes: bool | None) -> None:
            if not yes:
                return

            async def work() -> str:
                await self.client.delete(design["id"])
                if isinstance(app.screen, DesignScreen):
                    app.pop_screen()
                return f"deleted {short_id(design['id'])}"

            self.act(work)

        app.push_screen(
            ConfirmScreen(f"Delete design {short_id(design['id'])} “{text(design.get('name'), '')}” and its files?"),
            answered,
        )

    def action_revoke(self) -> None:
        design = self.need_design()
        if design is None:
            return

        async def work() -> str:
            mine = [
                t for t in await self.client.pending() if t.get("design_id") == design["id"] and not t.get("revoked")
            ]
            for t in mine:
                await self.client.revoke(text(t.get("task_id")))
            if not mine:
                return f"no pending task for {short_id(design['id'])} (running tasks cannot be revoked)"
            return f"revoked {len(mine)} pending task(s) of {short_id(design['id'])}; the design stays a draft"

        self.act(work)

    def action_open_preview(self) -> None:
        design = self.need_design()
        if design is None:
            return
        url = design.get("preview_url") or self.client.preview_url(design["id"])
        self.app.open_url(url)
        self.app.notify(f"opening {url}")

    def action_copy_id(self) -> None:
        design_id = self.selected_design_id()
        if design_id is None:
            self.app.notify("no design selected", severity="warning")
            return
        self.app.copy_to_clipboard(design_id)
        self.app.notify(f"copied {design_id}")

    def action_stack(self) -> None:
        design_id = self.selected_design_id()
        threads = self.state.threads()
        mine = [t for t in threads if design_id and t.get("design_id") == design_id]
        busy = mine or [t for t in threads if t.get("state") == "busy"]
        if not busy:
            self.app.notify("no worker thread is running a task", severity="warning")
            return
        worker = text(busy[0].get("name"))

        async def work() -> None:
            self.app.push_screen(StackScreen(await self.client.stack(worker)))

        self.act(work)


class DesignScreen(DesignActionsScreen):
    """One design: fields, layers, the preview drawn in the terminal, and its task timeline."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q,backspace", "app.pop_screen", "Back"),
        Binding("r", "retry", "Retry failed"),
        Binding("R", "rerender", "Re-render"),
        Binding("d", "delete", "Delete"),
        Binding("x", "revoke", "Revoke pending"),
        Binding("o", "open_preview", "Open preview"),
        Binding("c", "copy_id", "Copy id"),
        Binding("s", "stack", "Stack"),
        Binding("question_mark", "app.help", "Help"),
    ]

    def __init__(self, design_id: str, client: ApiClient, state: DashboardState) -> None:
        super().__init__(client, state)
        self.design_id = design_id
        self.design: dict[str, Any] = {}

    def selected_design_id(self) -> str | None:
        return self.design_id

    def selected_design(self) -> dict[str, Any] | None:
        return self.design or super().selected_design()

    def compose(self) -> ComposeResult:
        with Horizontal(id="detail-top"):
            with VerticalScroll(id="detail-info-box"):
                yield Static(id="detail-info")
                yield Static(id="detail-layers")
            yield HalfBlockImage(id="detail-preview")
        yield DataTable(id="detail-tasks", cursor_type="row", zebra_stripes=True)
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#detail-tasks", DataTable)
        for label in ("started", "task", "state", "try", "worker", "wait ms", "run ms", "error"):
            table.add_column(label, key=label)
        self.run_worker(self.reload(), exclusive=True, group="detail", exit_on_error=False)

    async def reload(self) -> None:
        with contextlib.suppress(NoMatches):  # the screen may close while its data is on the way
            await self._reload()

    async def _reload(self) -> None:
        client = self.client
        try:
            design = await client.design(self.design_id, self.state.every_owner)
            tasks = await client.design_tasks(self.design_id)
        except Exception as exc:
            self.query_one("#detail-info", Static).update(Text(f"could not load: {exc}", style="red"))
            return
        if design is None:
            self.query_one("#detail-info", Static).update(Text("this design is gone (deleted)", style="red"))
            return
        old_version = (self.design.get("preview_version"), self.design.get("status"))
        self.design = design
        self.show(design, tasks)
        if (design.get("preview_version"), design.get("status")) != old_version or old_version == (None, None):
            await self.load_preview()

    async def load_preview(self) -> None:
        preview = self.query_one("#detail-preview", HalfBlockImage)
        if self.design.get("preview_version") is None:
            preview.set_image(None)
            return
        try:
            data = await self.client.thumbnail(self.design_id)
            image = Image.open(io.BytesIO(data)) if data else None
            if image is not None:
                image.load()
        except Exception:
            image = None
        preview.set_image(image)

    def show(self, design: dict[str, Any], tasks: list[dict[str, Any]]) -> None:
        status = text(design.get("status"))
        info = Table.grid(padding=(0, 1))
        info.add_column(style="dim")
        info.add_column()
        info.add_row("name", Text(text(design.get("name"), ""), style="bold"))
        info.add_row("id", text(design.get("id")))
        info.add_row("status", Text(status, style=f"bold {STATUS_COLORS.get(status, '')}"))
        info.add_row("product", f"{text(design.get('product'))}  {text(design.get('color'))}")
        info.add_row("version", f"{design.get('version', '?')} (preview shows {design.get('preview_version') or '–'})")
        info.add_row("render", f"{fmt_ms(design.get('render_ms'))} ms, attempts {design.get('attempts', '?')}")
        info.add_row("created", text(design.get("created_at")))
        info.add_row("updated", text(design.get("updated_at")))
        if design.get("error"):
            info.add_row("error", Text(text(design.get("error")), style="red"))
        info.add_row("preview", text(design.get("preview_url"), "–"))
        self.query_one("#detail-info", Static).update(info)
        layers = Table(box=None, padding=(0, 1), header_style="bold dim", title="layers", title_justify="left")
        for name in ("#", "type", "what", "at"):
            layers.add_column(name, no_wrap=True)
        for i, layer in enumerate(list_of(design.get("layers"))):
            layer = dict_of(layer)
            kind = text(layer.get("type"))
            what = _layer_summary(kind, layer)
            layers.add_row(str(i), kind, what, f"{layer.get('x', '?')}, {layer.get('y', '?')}")
        self.query_one("#detail-layers", Static).update(layers)
        table = self.query_one("#detail-tasks", DataTable)
        table.clear()
        for t in tasks:
            state = text(t.get("state"))
            style = {"succeeded": "green", "failed": "red", "retrying": "yellow", "running": "cyan"}.get(state, "")
            started = text(t.get("started_at"), "")
            table.add_row(
                started[11:23] if len(started) > 19 else started,
                TASK_LABELS.get(text(t.get("task")), text(t.get("task"))),
                Text(state, style=style),
                str(t.get("attempt", "?")),
                text(t.get("worker"), "–").rsplit("/", 1)[-1],
                fmt_ms(t.get("wait_ms")),
                fmt_ms(t.get("run_ms")),
                Text(text(t.get("error"), ""), style="red"),
            )


def _layer_summary(kind: str, layer: dict[str, Any]) -> str:
    if kind == "text":
        return f"“{text(layer.get('text'), '')[:24]}” {text(layer.get('font'), '')}"
    if kind == "image":
        return f"asset {short_id(layer.get('asset_id'))}"
    if kind == "shape":
        return f"{text(layer.get('shape'))} {text(layer.get('fill'), '')}"
    return ""
