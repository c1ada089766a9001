"""Where renders and uploads live: the data dir (the default) or an S3-compatible object store.

Both backends are addressed by *keys*, the same for both, and the database records keys, never
paths: `renders/<design id>/v<version>-<claim tag>.png` (and `.thumb.webp|.jpg`), and
`assets/<sha256[:2]>/<sha256>.<ext>`. Keys are made of ids only (a design's name never reaches
one), so moving from one backend to the other (`customify storage migrate`) copies objects and
changes no row.

A render helper draws into a local file (`staging_path(key)`); `put_file` then makes it the
object. In the data dir the staging file *is* the object (no copy); with S3 it is uploaded
(content type, Cache-Control, a CRC32 checksum the store verifies) and the local file removed.
An S3 PUT is atomic: a reader never sees half an object, and a crash mid-upload leaves none.

The S3 client is boto3 (botocore), measured against minio-py (bench/RESULTS.md, "Object storage"):
minio-py costs less per object, but boto3 is the reference of the AWS credential chain (profiles, SSO,
assume-role, IRSA, ECS and instance roles), addresses path- or virtual-style as told, retries with
backoff and sends checksums; reads are served from memory (storage.cache_mb), so the per-GET cost
stays off the serving path, and the per-PUT difference is a few ms per render.
"""

from __future__ import annotations

import base64
import contextlib
import os
import shutil
import tempfile
import threading
import time
import zlib
from collections import OrderedDict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

from customify.config import Config, S3Target, StorageSettings, parse_s3_url, redact_storage_url
from customify.errors import first_line

CACHE_CONTROL = "private, max-age=31536000, immutable"  # a key is never rewritten with other bytes
PROBE_PREFIX = ".probe/"


class StoreUnavailable(ConnectionError):
    """The object store did not answer (or answered 5xx): transient, retried by the tasks."""


class StoreMisconfigured(Exception):
    """The store answered, but the bucket, the credentials or the URL are wrong: one line with the fix."""


@dataclass(frozen=True)
class ObjectInfo:
    size: int
    modified: float  # seconds since the epoch


def write_atomic(path: Path, data: bytes) -> Path:
    """Write to a temp name in the same directory, then rename into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def render_keys(design_id: str, version: int, thumb_ext: str, tag: str) -> tuple[str, str]:
    """The claim tag keeps two workers that rendered the same version (one lost its lease) from ever
    touching each other's objects."""
    folder = f"renders/{design_id}"
    return f"{folder}/v{version}-{tag}.png", f"{folder}/v{version}-{tag}.thumb.{thumb_ext}"


def asset_key(sha256: str, fmt: str) -> str:
    return f"assets/{sha256[:2]}/{sha256}.{fmt.lower()}"


def media_type(key: str) -> str:
    suffix = key.rsplit(".", 1)[-1]
    return {"png": "image/png", "webp": "image/webp", "jpg": "image/jpeg", "jpeg": "image/jpeg"}.get(
        suffix, "application/octet-stream"
    )


class RangeNotSatisfiable(Exception):
    def __init__(self, size: int) -> None:
        super().__init__(f"the range is outside the {size} bytes")
        self.size = size


def byte_range(spec: str, size: int) -> tuple[int, int]:
    """(first, last) of one HTTP byte range ("0-99", "100-", "-100") in an object of `size` bytes.
    ValueError when it is not one range; RangeNotSatisfiable when it is outside the object."""
    first_s, sep, last_s = spec.strip().partition("-")
    if not sep or not (first_s.isdigit() or last_s.isdigit()) or not all(p.isdigit() for p in (first_s, last_s) if p):
        raise ValueError(f"not a byte range: {spec!r}")
    if not first_s:  # the last N bytes
        if int(last_s) == 0:
            raise RangeNotSatisfiable(size)
        return max(0, size - int(last_s)), size - 1
    first = int(first_s)
    last = min(int(last_s), size - 1) if last_s else size - 1
    if first >= size or (last_s and int(last_s) < first):
        raise RangeNotSatisfiable(size)
    return first, last


class Files:
    """The data dir's own files (outbox, caches) and the objects, by key. Subclasses store the objects."""

    kind = "local"

    def __init__(self, root: Path) -> None:
        self.root = root
        self.outbox = root / "outbox"
        self.renders = root / "renders"
        self.assets = root / "assets"

    def write(self, path: Path, data: bytes) -> Path:
        """A file of this machine's data dir (the mail outbox)."""
        return write_atomic(path, data)

    def describe(self) -> str:
        return f"files in {self.root}"

    # Objects, by key (the data dir: root/key) -------------------------------

    def path(self, key: str) -> Path:
        return self.root / key

    def staging_path(self, key: str) -> Path:
        """Where a render helper writes the file that becomes `key` (see put_file)."""
        return self.path(key)

    def put_file(self, key: str, staged: Path) -> None:
        """Make the staged file the object `key`."""
        if staged != self.path(key):
            write_atomic(self.path(key), staged.read_bytes())
            staged.unlink(missing_ok=True)

    def put_files(self, staged: list[tuple[str, Path]], between: Callable[[], None] = lambda: None) -> None:
        """put_file for each (key, staged file); `between` runs once the first is stored (a crash point)."""
        for i, (key, path) in enumerate(staged):
            self.put_file(key, path)
            if i == 0:
                between()

    def put(self, key: str, data: bytes) -> None:
        write_atomic(self.path(key), data)

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def stat(self, key: str) -> ObjectInfo:
        """Raises FileNotFoundError when there is no such object."""
        st = os.stat(self.path(key))
        return ObjectInfo(st.st_size, st.st_mtime)

    def read(self, key: str) -> bytes:
        """The object's bytes; FileNotFoundError if there is none."""
        with open(self.path(key), "rb") as handle:
            return handle.read()

    def read_range(self, key: str, spec: str) -> tuple[bytes, int, int]:
        """Bytes of an HTTP range spec ("0-99", "100-", "-100") and (first byte, whole size).
        Raises RangeNotSatisfiable, FileNotFoundError."""
        with open(self.path(key), "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            first, last = byte_range(spec, size)
            handle.seek(first)
            return handle.read(last - first + 1), first, size

    def local_copy(self, key: str) -> Path:
        """A file of the object on this machine, for the renderer (assets are content-addressed: a
        copy never goes stale)."""
        return self.path(key)

    def delete(self, keys: list[str]) -> None:
        for key in keys:
            self.path(key).unlink(missing_ok=True)

    def remove_renders(self, design_id: str, keep: set[str] | None = None) -> None:
        """Remove a design's render objects, except the keys in `keep`."""
        folder = self.renders / design_id
        if not folder.is_dir():
            return
        if not keep:
            shutil.rmtree(folder, ignore_errors=True)
            return
        names = {k.rsplit("/", 1)[-1] for k in keep}
        for file in folder.iterdir():
            if file.name not in names and not file.name.startswith("."):
                file.unlink(missing_ok=True)

    def list(self, prefix: str) -> Iterator[tuple[str, ObjectInfo]]:
        """Every object under `prefix` ("renders/"), with its size and modification time."""
        base = self.root / prefix
        for folder, _dirs, files in os.walk(base):
            for name in files:
                if name.startswith("."):
                    continue  # a write in progress (write_atomic's temp name)
                path = Path(folder) / name
                with contextlib.suppress(FileNotFoundError):
                    st = path.stat()
                    yield path.relative_to(self.root).as_posix(), ObjectInfo(st.st_size, st.st_mtime)

    def clean_staging(self, cutoff: float) -> None:
        """Remove files a killed render helper left half-written (older than `cutoff`, epoch seconds)."""
        for folder, _dirs, files in os.walk(self.renders):
            for name in files:
                path = Path(folder) / name
                with contextlib.suppress(FileNotFoundError):
                    if name.startswith(".") and name.endswith(".tmp") and path.stat().st_mtime < cutoff:
                        path.unlink()

    def presign(self, key: str, seconds: int) -> str | None:
        """A short-lived URL a client can GET without us; None where the backend has none."""
        return None

    def check(self) -> str:
        """Write, read and delete a probe object; returns what was checked. Raises on failure."""
        key = f"{PROBE_PREFIX}{os.getpid()}-{threading.get_ident()}-{time.time_ns()}"
        self.put(key, b"probe")
        try:
            if self.read(key) != b"probe":
                raise OSError("the probe object read back different bytes")
        finally:
            self.delete([key])
        return self.describe()

    def server_time(self) -> datetime | None:
        """The store's clock (its Date header), for the skew check; None for the data dir."""
        return None

    def close(self) -> None:
        """Let go of connections to the store."""


class S3Files(Files):
    """Objects in an S3-compatible bucket; the data dir keeps only staging files, caches and the outbox."""

    kind = "s3"

    def __init__(self, root: Path, url: str, settings: StorageSettings) -> None:
        super().__init__(root)
        target = parse_s3_url(url)
        self.bucket, self.prefix = target.bucket, target.prefix
        self.url = url
        self.endpoint = settings.endpoint_url or None
        self.settings = settings
        self.staging = root / "staging"
        self.cache = root / "cache"
        self._client = make_client(target, settings)
        # Recently read objects, by key: a key is never rewritten with other bytes, so a copy never goes stale.
        self._memory: OrderedDict[str, bytes] = OrderedDict()
        self._memory_bytes = 0
        self._memory_limit = settings.cache_mb * 1024 * 1024
        self._memory_lock = threading.Lock()
        self._uploads = ThreadPoolExecutor(max_workers=8, thread_name_prefix="s3-upload")

    def close(self) -> None:
        self._uploads.shutdown(wait=True)
        self._client.close()

    def describe(self) -> str:
        return f"objects in {redact_storage_url(self.url)}" + (f" at {self.endpoint}" if self.endpoint else "")

    def _key(self, key: str) -> str:
        return self.prefix + key

    def staging_path(self, key: str) -> Path:
        return self.staging / key

    def put_files(self, staged: list[tuple[str, Path]], between: Callable[[], None] = lambda: None) -> None:
        """The first (the preview) here while the others upload beside it: a render waits for the slowest
        PUT, not for their sum."""
        first, *rest = staged
        others = [self._uploads.submit(self.put_file, key, path) for key, path in rest]
        try:
            self.put_file(*first)
            between()
        finally:
            for future in others:
                future.exception()  # wait for every one, even when the first failed
        for future in others:
            future.result()

    def put_file(self, key: str, staged: Path) -> None:
        self.put(key, staged.read_bytes())
        staged.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            staged.parent.rmdir()  # the design's staging folder, when it is empty

    def clean_staging(self, cutoff: float) -> None:
        for folder, _dirs, files in os.walk(self.staging):
            for name in files:
                path = Path(folder) / name
                with contextlib.suppress(FileNotFoundError):
                    if path.stat().st_mtime < cutoff:
                        path.unlink()

    def put(self, key: str, data: bytes) -> None:
        # The CRC32 in a plain header, which the store verifies: botocore's own (a trailer, with aws-chunked
        # encoding) costs more per PUT (how much: bench/RESULTS.md, Object storage).
        crc = base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()
        self._call(
            "put_object",
            Key=self._key(key),
            Body=data,
            ContentType=media_type(key),
            CacheControl=CACHE_CONTROL,
            ChecksumCRC32=crc,
        )

    def exists(self, key: str) -> bool:
        try:
            self.stat(key)
        except FileNotFoundError:
            return False
        return True

    def _remember(self, key: str, data: bytes) -> None:
        if len(data) > self._memory_limit // 8:
            return
        with self._memory_lock:
            if key in self._memory:
                return
            self._memory[key] = data
            self._memory_bytes += len(data)
            while self._memory_bytes > self._memory_limit:
                _, old = self._memory.popitem(last=False)
                self._memory_bytes -= len(old)

    def _recall(self, key: str) -> bytes | None:
        with self._memory_lock:
            data = self._memory.get(key)
            if data is not None:
                self._memory.move_to_end(key)
            return data

    def stat(self, key: str) -> ObjectInfo:
        head = self._call("head_object", Key=self._key(key))
        return ObjectInfo(int(head["ContentLength"]), head["LastModified"].timestamp())

    def read(self, key: str) -> bytes:
        if (known := self._recall(key)) is not None:
            return known
        reply = self._call("get_object", Key=self._key(key))
        data = _body(key, reply)
        self._remember(key, data)
        return data

    def read_range(self, key: str, spec: str) -> tuple[bytes, int, int]:
        if (known := self._recall(key)) is not None:
            first, last = byte_range(spec, len(known))
            return known[first : last + 1], first, len(known)
        byte_range(spec, 1 << 62)  # its syntax; the store judges it against the size
        reply = self._call("get_object", Key=self._key(key), Range=f"bytes={spec}")
        data = _body(key, reply)
        content_range = str(reply.get("ContentRange") or "")  # bytes 0-9/40000
        if not content_range.startswith("bytes "):  # the store ignored the range: the whole object
            return data, 0, len(data)
        span, _, total = content_range[6:].partition("/")
        return data, int(span.split("-")[0]), int(total)

    def local_copy(self, key: str) -> Path:
        path = self.cache / key
        if not path.is_file():
            write_atomic(path, self.read(key))
        return path

    def delete(self, keys: list[str]) -> None:
        with self._memory_lock:
            for key in keys:
                if (gone := self._memory.pop(key, None)) is not None:
                    self._memory_bytes -= len(gone)
        for i in range(0, len(keys), 1000):
            chunk = [{"Key": self._key(k)} for k in keys[i : i + 1000]]
            if chunk:
                self._call("delete_objects", Delete={"Objects": chunk, "Quiet": True})

    def remove_renders(self, design_id: str, keep: set[str] | None = None) -> None:
        doomed = [key for key, _ in self.list(f"renders/{design_id}/") if key not in (keep or set())]
        self.delete(doomed)

    def list(self, prefix: str) -> Iterator[tuple[str, ObjectInfo]]:
        token: str | None = None
        while True:
            extra: dict[str, Any] = {"ContinuationToken": token} if token else {}
            page = self._call("list_objects_v2", Prefix=self._key(prefix), **extra)
            for item in page.get("Contents", []):
                yield (item["Key"][len(self.prefix) :], ObjectInfo(int(item["Size"]), item["LastModified"].timestamp()))
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or not token:
                return

    def presign(self, key: str, seconds: int) -> str | None:
        url: str = self._client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": self._key(key)}, ExpiresIn=seconds
        )
        return url

    def check(self) -> str:
        self._call("head_bucket")  # some stores create a missing bucket on the first PUT: ask first
        return super().check()

    def server_time(self) -> datetime | None:
        reply = self._call("head_bucket")
        date = reply.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
        return parsedate_to_datetime(date).astimezone(UTC) if date else None

    def _call(self, operation: str, **params: Any) -> Any:
        """One S3 call; botocore's errors become FileNotFoundError, StoreUnavailable or StoreMisconfigured."""
        from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

        try:
            return getattr(self._client, operation)(Bucket=self.bucket, **params)
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code = str(error.get("Code", ""))
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
            if code in ("NoSuchKey", "NotFound", "404") and operation != "head_bucket":
                raise FileNotFoundError(params.get("Key", "")) from None
            if code in ("NoSuchBucket",) or (status == 404 and operation == "head_bucket"):
                raise StoreMisconfigured(
                    f"key 'storage_url': bucket {self.bucket!r} does not exist"
                    f"{f' at {self.endpoint}' if self.endpoint else ''}; create it, or fix storage_url / "
                    "CUSTOMIFY_STORAGE_URL"
                ) from None
            if status in (401, 403) or code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied"):
                raise StoreMisconfigured(
                    f"key 'storage_url': the object store refused the credentials ({code or status}); set "
                    "s3://KEY:SECRET@BUCKET/PREFIX in storage_url / CUSTOMIFY_STORAGE_URL, or "
                    "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
                ) from None
            if status == 416 or code == "InvalidRange":
                raise RangeNotSatisfiable(-1) from None
            raise StoreUnavailable(f"unreachable (it answered {status} {code})") from None
        except NoCredentialsError:
            raise StoreMisconfigured(
                "key 'storage_url': no credentials for the object store; set s3://KEY:SECRET@BUCKET/PREFIX "
                "in storage_url / CUSTOMIFY_STORAGE_URL, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
            ) from None
        except BotoCoreError as exc:
            raise StoreUnavailable(f"unreachable ({first_line(exc)})") from None


def make_client(target: S3Target, settings: StorageSettings) -> Any:
    import boto3
    from botocore.config import Config as BotoConfig

    addressing = settings.addressing
    if addressing == "auto":
        addressing = "path" if settings.endpoint_url else "virtual"
    config = BotoConfig(
        region_name=settings.region or None,
        signature_version="s3v4",
        s3={"addressing_style": addressing},
        retries={"max_attempts": 3, "mode": "standard"},
        connect_timeout=settings.timeout_seconds,
        read_timeout=settings.timeout_seconds,
        max_pool_connections=64,
        parameter_validation=False,  # our own calls, always well-formed: saves a little per request
        request_checksum_calculation="when_required",  # we ask for CRC32 on PUT ourselves
        response_checksum_validation="when_supported",
    )
    session = boto3.session.Session()
    return session.client(
        "s3",
        endpoint_url=settings.endpoint_url or None,
        aws_access_key_id=target.key_id,
        aws_secret_access_key=target.secret,
        region_name=settings.region or None,
        config=config,
    )


def open_files(config: Config, root: Path) -> Files:
    """The configured backend: the data dir, or the bucket of storage_url."""
    if not config.storage_url:
        return Files(root)
    return S3Files(root, config.storage_url, config.storage)


def check_reachable(files: Files, attempts: int = 3, delay: float = 1.0, within: float = 5.0) -> None:
    """At start-up: probe the store a few times (it may be starting too), then give up with one line.
    No new attempt starts after `within` seconds (one that hangs ends at storage.timeout_seconds).
    Raises StoreMisconfigured (wrong bucket/credentials, at once) or StoreUnavailable."""
    started = time.monotonic()
    for attempt in range(attempts):
        try:
            files.check()
            return
        except StoreUnavailable:
            if attempt == attempts - 1 or time.monotonic() - started + delay > within:
                raise
            time.sleep(delay)


def _body(key: str, reply: dict[str, Any]) -> bytes:
    """The bytes of a get_object reply; a body that breaks off midway is the store away."""
    body = reply["Body"]
    try:
        return bytes(body.read())
    except Exception as exc:
        raise StoreUnavailable(f"unreachable (it broke off {key}: {first_line(exc)})") from None
    finally:
        body.close()


def unreachable_line(files: Files, exc: BaseException) -> str:
    """The start-up error line for a store that cannot be used (no secret in it)."""
    if isinstance(exc, StoreMisconfigured):
        return str(exc)
    endpoint = getattr(files, "endpoint", None) or "the AWS default endpoint"
    reason = str(exc) if isinstance(exc, StoreUnavailable) else f"unreachable ({first_line(exc)})"
    return (
        f"key 'storage.endpoint_url': the object store at {endpoint} is {reason}; start it, or fix "
        "storage.endpoint_url / CUSTOMIFY_STORAGE_ENDPOINT_URL"
    )


class StoreHealth:
    """The store check of health: one probe (write, read, delete) at most every `every` seconds."""

    def __init__(self, files: Files, every: float = 2.0) -> None:
        self.files = files
        self.every = every
        self._at = 0.0
        self._last: tuple[bool, str] = (True, "")
        self._lock = threading.Lock()

    def check(self) -> tuple[bool, str]:
        """(ok, detail): blocking; call it from a thread."""
        with self._lock:
            if time.monotonic() - self._at < self.every and self._at:
                return self._last
            try:
                self._last = (True, self.files.check())
            except Exception as exc:
                self._last = (False, f"{self.files.describe()}: {first_line(exc)}")
            self._at = time.monotonic()
            return self._last


# Moving a data dir's objects to a bucket (customify storage migrate) -------------------------------


def copy_verified(source: Files, target: Files, key: str) -> bool:
    """Copy one object unless the target already has the same bytes; verify by reading it back.
    Returns whether it was copied. Raises OSError when the copy does not read back the same."""
    import hashlib

    data = source.read(key)
    try:
        if (
            target.stat(key).size == len(data)
            and hashlib.sha256(target.read(key)).digest() == hashlib.sha256(data).digest()
        ):
            return False  # done by an earlier run
    except FileNotFoundError:
        pass
    target.put(key, data)
    if hashlib.sha256(target.read(key)).digest() != hashlib.sha256(data).digest():
        raise OSError(f"{key} read back different bytes from the target")
    return True
