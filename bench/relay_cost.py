"""What the relay (customify/relay.py) costs Postgres at full throughput.

One sender (a worker process's relay) publishes design events at --rate per second, evenly spaced, for
--seconds; --listeners API processes' relays receive them (each its own engine and LISTEN connection, as
separate processes would have). A design rendered sends ~8 relayed events (its two status changes, the
render task's enqueued/started/published, the mail task's enqueued/started/sent), so the default 500/s is
a little above the fastest burst measured on this machine (54 designs/s).

Reports the CPU of the database's backends (from /proc, summed over the windows) while idle and under the
load, per 1,000 events and per listener, and what each listener received.

    python bench/relay_cost.py [--rate 500] [--listeners 2] [--seconds 10] [--rounds 2]
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
import uuid
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import banner, med, out, proc_cpu

from customify import db
from customify.events import EventHub
from customify.relay import Relay

PG = "postgresql://postgres@127.0.0.1:5432"


def backend_cpu(dbname: str) -> float:
    """CPU seconds so far of the database's backends (those gone meanwhile do not count)."""
    with psycopg.connect(f"{PG}/test", autocommit=True) as conn:
        pids = [r[0] for r in conn.execute("select pid from pg_stat_activity where datname = %s", (dbname,))]
    total = 0.0
    for pid in pids:
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            total += proc_cpu(pid)
    return total


def window(dbname: str, seconds: float, hub: EventHub | None, rate: float) -> tuple[float, int]:
    """(Postgres CPU seconds, events published) over one window."""
    before = backend_cpu(dbname)
    sent = 0
    start = time.monotonic()
    if hub is None:
        time.sleep(seconds)
    else:
        while (now := time.monotonic()) < start + seconds:
            due = int((now - start) * rate)
            while sent < due:
                design_id = str(uuid.uuid4())
                hub.publish("design.status", design_id=design_id, status="published", version=1, render_ms=23.4)
                sent += 1
            time.sleep(0.002)
    time.sleep(0.5)  # what is in flight arrives
    return backend_cpu(dbname) - before, sent


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=float, default=500)
    parser.add_argument("--listeners", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    banner("the relay's cost to Postgres (LISTEN/NOTIFY), one sender, several listeners")
    dbname = f"relay_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(f"{PG}/test", autocommit=True) as conn:
        conn.execute(f'create database "{dbname}"')
    url = f"{PG}/{dbname}"
    engines = [db.make_sync_engine(url) for _ in range(args.listeners + 1)]
    hub = EventHub()
    sender = Relay(hub, engines[0])
    listeners = [Relay(EventHub(), engine) for engine in engines[1:]]
    try:
        sender.start(listen=False)
        for relay in listeners:
            relay.start(listen=True)
        deadline = time.monotonic() + 10
        while not all(r.listening for r in listeners):
            assert time.monotonic() < deadline, "the listeners did not listen"
            time.sleep(0.05)
        idle_cpu, busy_cpu, per_k = [], [], []
        for round_ in range(args.rounds):
            idle, _ = window(dbname, args.seconds, None, 0)
            received = [r.received for r in listeners]
            busy, sent = window(dbname, args.seconds, hub, args.rate)
            got = [r.received - before for r, before in zip(listeners, received, strict=True)]
            extra = busy - idle
            idle_cpu.append(idle / args.seconds)
            busy_cpu.append(busy / args.seconds)
            per_k.append(extra / sent * 1e6)  # µs per event
            out(
                f"round {round_}: {sent / args.seconds:.0f} events/s sent, received {got} | Postgres backends: "
                f"idle {idle / args.seconds:.3f} cores, under load {busy / args.seconds:.3f} cores | "
                f"{extra / sent * 1e6:.0f} µs of Postgres CPU per event | sender: {sender.sent} sent, "
                f"{sender.send_failures} failures"
            )
        out()
        out(
            f"median: Postgres {med(busy_cpu):.3f} cores at {args.rate:.0f} events/s with {args.listeners} listeners "
            f"(idle {med(idle_cpu):.3f}); {med(per_k):.0f} µs of Postgres CPU per event"
        )
    finally:
        sender.stop()
        for relay in listeners:
            relay.stop()
        for engine in engines:
            engine.dispose()
        with psycopg.connect(f"{PG}/test", autocommit=True) as conn:
            conn.execute(f'drop database if exists "{dbname}" with (force)')


if __name__ == "__main__":
    main()
