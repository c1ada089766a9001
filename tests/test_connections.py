"""Slow and idle connections are closed, their number capped; links never point at 0.0.0.0."""

from __future__ import annotations

import selectors
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import msgspec
import pytest
import uvicorn

from customify.api import create_app
from customify.api.connections import server_config
from customify.config import Config
from customify.runtime import Runtime

FAST = {"request_head_seconds": 1.0, "body_stall_seconds": 1.0, "keep_alive_seconds": 1, "max_connections": 400}


@pytest.fixture
def guarded(make_config: Callable[..., Config]) -> Iterator[Callable[..., str]]:
    """The app served the way `customify run` serves it (the guarded protocol); yields a starter → base URL."""
    started: list[tuple[uvicorn.Server, threading.Thread, Runtime]] = []

    def start(**limits: Any) -> str:
        config = make_config(limits={**FAST, **limits})
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(2048)
        config = msgspec.structs.replace(config, port=sock.getsockname()[1])
        rt = Runtime(config)
        server = uvicorn.Server(
            server_config(
                create_app(config, consumer=False, runtime=rt),
                config.limits,
                log_level="warning",
                access_log=False,
                lifespan="on",
            )
        )
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        deadline = time.monotonic() + 15
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "the app did not start"
            time.sleep(0.01)
        started.append((server, thread, rt))
        return config.base_url

    yield start
    for server, thread, rt in started:
        server.should_exit = True
        thread.join(15)
        rt.close()


def port(base: str) -> int:
    return int(base.rsplit(":", 1)[1])


def closed_within(sockets: list[socket.socket], seconds: float) -> list[bytes]:
    """Wait until the server closes every socket; returns what each received (fails after `seconds`)."""
    selector = selectors.DefaultSelector()
    got: dict[socket.socket, bytes] = {}
    for sock in sockets:
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ)
        got[sock] = b""
    open_ = set(sockets)
    deadline = time.monotonic() + seconds
    while open_ and time.monotonic() < deadline:
        for key, _ in selector.select(timeout=0.2):
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            try:
                data = sock.recv(4096)
            except (ConnectionResetError, BlockingIOError):
                data = b""
            if data:
                got[sock] += data
                continue
            selector.unregister(sock)
            open_.discard(sock)
    assert not open_, f"{len(open_)} of {len(sockets)} connections still open after {seconds} s"
    for sock in sockets:
        sock.close()
    return [got[s] for s in sockets]


@pytest.mark.slow  # 300 connections held until their deadline
def test_connections_without_a_complete_head_are_closed_and_the_server_answers(guarded: Any) -> None:
    base = guarded()
    slow = []
    for n in range(300):  # silent ones, and ones trickling a head that never ends
        sock = socket.create_connection(("127.0.0.1", port(base)))
        if n % 2:
            sock.sendall(b"GET /api/v1/products HTTP/1.1\r\nHost: 127.0.0.1\r\nX-a: ")
        slow.append(sock)
    with httpx.Client(base_url=base, timeout=5) as client:
        for _ in range(5):
            assert client.get("/api/v1/system/health").status_code in (200, 503)  # answered while they wait
    for sock in slow[1::2]:
        sock.sendall(b"b")  # one more byte: a trickle does not reset the deadline
    replies = closed_within(slow, 15)
    assert all(r == b"" or r.startswith(b"HTTP/1.1 408") for r in replies)


def test_a_body_that_stalls_is_abandoned(guarded: Any) -> None:
    base = guarded()
    sock = socket.create_connection(("127.0.0.1", port(base)))
    sock.sendall(
        b"POST /api/v1/designs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b'Content-Length: 1000\r\n\r\n{"name": '
    )
    [reply] = closed_within([sock], 10)
    assert reply.startswith(b"HTTP/1.1 408") or reply == b""
    with httpx.Client(base_url=base, timeout=5) as client:
        assert client.get("/api/v1/designs").json()["items"] == []


def test_an_idle_keep_alive_connection_is_closed(guarded: Any) -> None:
    base = guarded()
    sock = socket.create_connection(("127.0.0.1", port(base)))
    sock.sendall(b"GET /api/v1/products HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    time.sleep(0.5)
    [reply] = closed_within([sock], 10)
    assert reply.startswith(b"HTTP/1.1 200")  # answered, then closed when idle


def test_connections_past_the_cap_are_closed_at_once(guarded: Any) -> None:
    base = guarded(max_connections=20, request_head_seconds=30.0)
    held = [socket.create_connection(("127.0.0.1", port(base))) for _ in range(20)]
    time.sleep(0.5)
    extra = [socket.create_connection(("127.0.0.1", port(base))) for _ in range(5)]
    closed_within(extra, 5)  # long before the 30 s head deadline
    for sock in held:
        sock.close()


def test_bound_to_every_address_without_public_url_it_refuses_to_start(tmp_path: Any) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "customify", "api", "--host", "0.0.0.0", "--port", "0", "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    [line] = done.stderr.strip().splitlines()
    assert "public_url" in line and "0.0.0.0" in line
