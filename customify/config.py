"""Typed configuration: built-in defaults → TOML file → environment → flags.

Every key is a field of a frozen msgspec Struct with a docstring under it;
`customify.toml` at the repository root documents them all (a test checks).
"""

from __future__ import annotations

import ipaddress
import os
import re
import tempfile
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

import msgspec


class ConfigError(Exception):
    """A configuration problem, phrased as one line naming the key and the fix."""


class Limits(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    max_layers: int = 20
    """Layers per design; more is a 422 naming this limit."""
    max_text_length: int = 500
    """Characters in one text layer."""
    max_name_length: int = 200
    """Characters in a design's name."""
    max_upload_bytes: int = 10_000_000
    """Bytes in one uploaded image; more is a 413."""
    max_upload_pixels: int = 25_000_000
    """Pixels (width × height) in one uploaded image; more is a 413, checked before decoding."""
    max_renders_in_flight_per_user: int = 0
    """Renders one user may have running while another user's designs wait (fair sharing; beyond it
    theirs wait their turn). 0: half the worker threads (`workers`), at least 1."""
    designs_per_minute: int = 60
    """Designs one user may create per minute (sliding window, counted in the database, so across API
    processes); more is a 429 with Retry-After. Operators are not limited; 0 turns it off."""
    max_render_megapixels: float = 60.0
    """A design whose estimated render cost (text area × layers, image pixels, rotations; see
    customify/render/cost.py) passes this many megapixels is refused at create with a 422."""
    request_head_seconds: float = 10.0
    """A connection that has not sent a complete request head this long after it opened (or after the
    first byte of its next request) is closed: slow clients cannot hold connections (slowloris)."""
    body_stall_seconds: float = 10.0
    """A request body that stops arriving for this long is abandoned and its connection closed."""
    keep_alive_seconds: int = 5
    """An idle keep-alive connection is closed after this many seconds."""
    max_connections: int = 4000
    """Open HTTP connections per API process; past it a new connection is closed at once."""


class RenderSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    png_compress_level: int = 1
    """zlib level of preview PNGs (0-9). 1 is chosen from measurement: see bench/RESULTS.md."""
    thumbnail_size: int = 300
    """Long side of the thumbnail, in pixels."""
    thumbnail_format: str = "webp"
    """Thumbnail format: "webp" or "jpeg"."""
    timeout_seconds: float = 240.0
    """A render running longer is stopped (its helper process is killed; with pool = "thread", at the next
    stage) and the design fails with this reason."""
    max_attempts: int = 3
    """Render attempts before a design is marked failed."""
    lease_seconds: float = 60.0
    """How long a render claim holds before the sweeper may re-drive the design; also how long a draft
    waits for its task (revoked, purged, lost) before the sweeper re-enqueues it."""
    sweep_interval: float = 5.0
    """Seconds between sweeps for designs left in draft or with an expired claim; 0 turns the sweeper off."""
    stall_seconds: float = 30.0
    """A busy worker thread whose render makes no progress (its helper uses no CPU time, or the thread reaches
    no stage) for this long is a problem: health 503 when no thread progresses, "degraded" when others do;
    the helper is then killed and the render retried. Above 0 and below timeout_seconds."""
    pool: str = "process"
    """Where the pixels are made: "process" (each worker thread hands its renders to an idle helper process
    (as many as threads), at worker_nice, so the drawing never holds the API's GIL) or "thread" (in the
    worker thread itself: less memory, but the API and the renders share one GIL)."""
    worker_nice: int = 10
    """CPU niceness (0-19) of the render helper processes (or of the worker threads, with pool = "thread"),
    so the API stays responsive while renders run."""
    asset_cache_mb: int = 64
    """Decoded uploads kept for the next render, per helper process (or per process with pool = "thread"),
    in MB; least recently used out first. 0 keeps none."""
    helper_max_renders: int = 1000
    """A render helper process is replaced (between renders) after this many renders; 0: never
    (Celery's max_tasks_per_child)."""
    helper_max_memory_mb: int = 512
    """A render helper whose resident memory passes this many MB after a render is replaced before the
    next one; 0: never (Celery's max_memory_per_child)."""
    start_helpers: bool = True
    """Start the render helpers with the consumer (one per worker thread), warming the products recent
    designs used while idle, so the first design does not wait for a cold helper; false: each helper starts
    on its thread's first render and builds only the products its renders use (no idle helper memory, no
    start-up CPU)."""


class StorageSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    endpoint_url: str = ""
    """S3 endpoint (http://127.0.0.1:8333 for SeaweedFS or MinIO, https://<account>.r2.cloudflarestorage.com
    for R2); empty means AWS S3 itself."""
    region: str = ""
    """S3 region (us-east-1, auto for R2); empty takes it from the AWS configuration chain."""
    addressing: str = "auto"
    """S3 addressing: "path" (http://endpoint/bucket/key: MinIO, SeaweedFS, Ceph), "virtual"
    (http://bucket.endpoint/key: AWS, R2) or "auto" (path with an endpoint_url, virtual without)."""
    serve: str = "proxy"
    """How the API serves previews and thumbnails from the store: "proxy" (streams them, with ETag, conditional
    requests and Range) or "redirect" (a 302 to a short-lived presigned URL). The data dir is always proxied."""
    presign_seconds: int = 300
    """Lifetime of a presigned URL in redirect mode."""
    timeout_seconds: float = 5.0
    """Connect and read timeout of one request to the store (each is retried twice before a render retries)."""
    orphan_grace_seconds: float = 900.0
    """The sweeper deletes render objects that no design references (a worker died between upload and
    publish, or during a delete) once they are this old."""
    cache_mb: int = 64
    """Memory per process for objects recently read from the store (previews, thumbnails, uploads: a key is
    never rewritten, so a copy never goes stale); 0 reads every one from the store."""


RETRY_SCHEDULE = (5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0)  # as Svix and other senders


class WebhookSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    retry_schedule: list[float] = msgspec.field(default_factory=lambda: list(RETRY_SCHEDULE))
    """Seconds to wait before each retry of a failed delivery (each ±20% jitter); after the last, it has failed.
    The default spans about a day, as the Standard Webhooks senders do."""
    allow_private_targets: bool | Literal["auto"] = "auto"
    """Deliver to loopback, private and link-local addresses: true, false, or "auto" (true in dev mode on
    loopback, so local development works; false otherwise). A cloud metadata address is never delivered to."""
    connect_timeout: float = 5.0
    """Seconds to connect to a receiver."""
    read_timeout: float = 10.0
    """Seconds to wait for a receiver's answer (per read)."""
    max_response_bytes: int = 4096
    """Bytes of a receiver's response body read (and shown in the delivery log); the rest is dropped."""
    disable_after_seconds: float = 432000.0
    """An endpoint whose deliveries have failed for this long (5 days) is disabled, with the reason shown."""
    secret_overlap_seconds: float = 86400.0
    """After rotate-secret, deliveries are signed with both secrets for this long, so receivers can roll."""


class PreviewSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    per_minute: int = 120
    """Instant previews one user may have rendered per minute (cached answers do not count); beyond, 429."""
    max_concurrent: int = 2
    """Instant previews rendered at once per API process, each in a helper of a small pool of its own (ahead of
    queued renders); a request that cannot start within a second is a 429."""
    cache_mb: float = 64.0
    """Megabytes of recent instant previews kept per API process (a repeated spec is served from it)."""


class Retention(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    task_history_days: float = 14.0
    """Task history (GET /api/v1/system/tasks) older than this many days is deleted by the periodic prune
    (every 5 minutes); 0 keeps it whatever its age."""
    task_history_rows: int = 100_000
    """At most this many task history rows are kept, the newest; 0 for no cap."""
    sent_mail_days: float = 30.0
    """Outbox rows of mails sent (or cancelled) longer ago than this many days are deleted; 0 keeps them."""
    worker_forget_seconds: float = 600.0
    """A worker process whose heartbeat is older than this leaves the registry (worker-status shows it
    as stale until then)."""


class Config(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    host: str = "127.0.0.1"
    """Address the HTTP API binds to. Any non-loopback address requires API keys."""
    port: int = 8000
    """TCP port of the HTTP API (0 picks a free one)."""
    data_dir: str = ".customify"
    """Databases, renders, uploads and the mail outbox live here."""
    database_url: str = ""
    """SQLAlchemy URL of the app database; empty means SQLite in the data dir."""
    queue_url: str = ""
    """Huey queue: empty means SQLite in the data dir; postgresql://… or redis://… to scale out."""
    queue_name: str = "customify"
    """Huey queue name: separates deployments (staging, production) that share one Redis or Postgres queue."""
    workers: int = 2
    """Render worker threads per consumer process."""
    storage_url: str = ""
    """Where renders and uploads live: empty means the data dir; s3://BUCKET/PREFIX (or
    s3://KEY:SECRET@BUCKET/PREFIX, always shown redacted) an S3-compatible object store (see [storage])."""
    smtp_url: str = ""
    """smtp://user:pass@host:port to send mail; empty writes .eml files to the outbox dir."""
    mail_from: str = "Customify <noreply@customify.local>"
    """From: address of outgoing mail."""
    public_url: str = ""
    """Base of absolute URLs in API responses; empty derives it from host and port."""
    dev_mode: str = "auto"
    """Either auto (requests without a key act as the dev user while bound to loopback) or off (keys always)."""
    log_file: str = "customify.log"
    """The operator's record (starts, stops, task failures, stalls, helper kills, re-drives), written by every
    process; relative to data_dir unless absolute. Rotates at 10 MB, 3 old files kept."""
    log_format: str = "text"
    """Log file lines: "text" (one readable line per event) or "json" (one JSON object per line, for log shippers)."""
    secret_key: str = ""
    """Signs the web pages' CSRF tokens; empty picks a random one per process (give every API process
    behind one load balancer the same value, or a form served by one is refused by another)."""
    metrics_token: str = ""
    """Bearer token that Prometheus sends to scrape /metrics (besides an operator's key); empty: operators only
    (on loopback in dev mode /metrics is open)."""
    cors_origins: list[str] = msgspec.field(default_factory=list)
    """Browser origins (https://shop.example) allowed to call the API from a web page; ["*"] allows any
    origin (keys are sent as a header, never as cookies, so no origin gets credentials). Empty: none."""
    limits: Limits = msgspec.field(default_factory=Limits)
    """Validation limits."""
    render: RenderSettings = msgspec.field(default_factory=RenderSettings)
    """Rendering and worker behaviour."""
    storage: StorageSettings = msgspec.field(default_factory=StorageSettings)
    """The object store of storage_url."""
    webhooks: WebhookSettings = msgspec.field(default_factory=WebhookSettings)
    """Signed webhook delivery."""
    previews: PreviewSettings = msgspec.field(default_factory=PreviewSettings)
    """Instant previews for editors."""
    retention: Retention = msgspec.field(default_factory=Retention)
    """How long history, sent mail and dead workers' rows are kept."""

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir).expanduser().resolve()

    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_path / 'customify.db'}"

    @property
    def effective_queue_url(self) -> str:
        return self.queue_url or f"sqlite:///{self.data_path / 'queue.db'}"

    @property
    def base_url(self) -> str:
        if self.public_url:
            return self.public_url.rstrip("/")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def renders_per_user(self) -> int:
        """limits.max_renders_in_flight_per_user, with 0 resolved to half the worker threads (at least 1)."""
        return self.limits.max_renders_in_flight_per_user or max(1, self.workers // 2)

    @property
    def dev_user_allowed(self) -> bool:
        return self.dev_mode == "auto" and is_loopback(self.host)

    @property
    def webhooks_may_reach_private(self) -> bool:
        allow = self.webhooks.allow_private_targets
        return self.dev_user_allowed if allow == "auto" else bool(allow)


ENV_KEYS = {
    "CUSTOMIFY_DATABASE_URL": "database_url",
    "DATABASE_URL": "database_url",
    "CUSTOMIFY_QUEUE_URL": "queue_url",
    "CUSTOMIFY_QUEUE_NAME": "queue_name",
    "CUSTOMIFY_DATA_DIR": "data_dir",
    "CUSTOMIFY_HOST": "host",
    "CUSTOMIFY_PORT": "port",
    "CUSTOMIFY_WORKERS": "workers",
    "CUSTOMIFY_SMTP_URL": "smtp_url",
    "CUSTOMIFY_PUBLIC_URL": "public_url",
    "CUSTOMIFY_STORAGE_URL": "storage_url",
    "CUSTOMIFY_SECRET_KEY": "secret_key",
}
# Keys of a section: CUSTOMIFY_STORAGE_ENDPOINT_URL sets storage.endpoint_url.
ENV_SECTION_KEYS = {
    f"CUSTOMIFY_STORAGE_{name.upper()}": ("storage", name)
    for name in (
        "endpoint_url",
        "region",
        "addressing",
        "serve",
        "presign_seconds",
        "timeout_seconds",
        "orphan_grace_seconds",
        "cache_mb",
    )
}
# CUSTOMIFY_DATABASE_URL wins over DATABASE_URL when both are set.
_ENV_PRECEDENCE = ["DATABASE_URL", *[k for k in ENV_KEYS if k != "DATABASE_URL"]]


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:/+")
_SECRET_PARAM = re.compile(r"(?i)\b(password|passwd|pwd|secret|token)=[^&\s]*")


def is_wildcard(host: str) -> bool:
    """0.0.0.0, :: or empty: every address of the machine, so no address a client can use in a link."""
    if not host:
        return True
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return False


def redact(text: str) -> str:
    """Hide passwords in a URL or in a message quoting one, whatever the URL's shape:
    anything like `user:password@` becomes `user:***@` (postgresql://u:***@h/db, but also a
    mistyped postgresql:/u:***@h, u:***@h), and `password=…` query parameters become `password=***`."""
    if not text:
        return text
    return " ".join(_redact_token(token) for token in text.split(" "))


def _redact_token(token: str) -> str:
    token = _SECRET_PARAM.sub(lambda m: f"{m.group(1)}=***", token)
    at = token.rfind("@")
    if at < 0:
        return token
    head, tail = token[:at], token[at:]
    scheme = _SCHEME.match(head)
    start = scheme.end() if scheme else 0
    colon = head.find(":", start)
    if colon < 0:
        return token  # a user without a password
    return f"{head[:colon]}:***{tail}"


def check_url(key: str, url: str) -> None:
    """One line naming the key for a URL whose host or port cannot be read (not a traceback later)."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - parsing the port is the check
    except ValueError as exc:
        netloc = redact(url.split("://", 1)[-1].split("/", 1)[0])
        raise ConfigError(
            f"key '{key}': {redact(url)!r} has a broken host or port ({netloc!r}: {exc}); "
            "write it like scheme://user:password@host:5432/name, an IPv6 host in brackets "
            "([::1]:5432)"
        ) from None


# storage_url is read here, where it is validated; customify.storage opens the bucket it names.
@dataclass(frozen=True)
class S3Target:
    bucket: str
    prefix: str  # "" or ending with "/"
    key_id: str | None
    secret: str | None


def parse_s3_url(url: str) -> S3Target:
    """s3://[KEY:SECRET@]BUCKET[/PREFIX] → its parts; ValueError with the fix otherwise."""
    parts = urlsplit(url)
    if parts.scheme != "s3" or not parts.hostname:
        raise ValueError(
            "use s3://BUCKET/PREFIX (or s3://KEY:SECRET@BUCKET/PREFIX), or leave it empty for the data dir"
        )
    bucket = parts.netloc.rsplit("@", 1)[-1]
    if not (3 <= len(bucket) <= 63) or not all(c.isalnum() or c in "-." for c in bucket) or bucket != bucket.lower():
        raise ValueError(f"{bucket!r} is not a bucket name (3-63 lower-case letters, digits, '-' or '.')")
    prefix = parts.path.strip("/")
    return S3Target(
        bucket,
        f"{prefix}/" if prefix else "",
        unquote(parts.username) if parts.username else None,
        unquote(parts.password) if parts.password else None,
    )


def redact_storage_url(url: str) -> str:
    """s3://KEY:SECRET@bucket/p → s3://***@bucket/p: neither half of the credentials is shown."""
    if "@" not in url:
        return url
    scheme, rest = url.split("://", 1) if "://" in url else ("", url)
    return f"{scheme}://***@{rest.rsplit('@', 1)[-1]}"


def _check_keys(data: Mapping[str, Any], struct: type[msgspec.Struct], where: str, prefix: str) -> None:
    fields = set(struct.__struct_fields__)
    for key, value in data.items():
        path = f"{prefix}{key}"
        if key not in fields:
            raise ConfigError(f"{where}: unknown key '{path}'; valid keys here: {', '.join(sorted(fields))}")
        sub = _SECTIONS.get(key) if not prefix else None
        if sub is not None:
            if not isinstance(value, Mapping):
                raise ConfigError(f"{where}: '{path}' must be a table ([{path}])")
            _check_keys(value, sub, where, f"{path}.")


_SECTIONS: dict[str, type[msgspec.Struct]] = {
    "limits": Limits,
    "render": RenderSettings,
    "storage": StorageSettings,
    "webhooks": WebhookSettings,
    "previews": PreviewSettings,
    "retention": Retention,
}


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def find_config_file(path: str | None, env: Mapping[str, str]) -> Path | None:
    if path:
        return Path(path)
    if env.get("CUSTOMIFY_CONFIG"):
        return Path(env["CUSTOMIFY_CONFIG"])
    default = Path("customify.toml")
    return default if default.is_file() else None


def load_config(
    path: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    flags: Mapping[str, Any] | None = None,
) -> Config:
    """Build the Config from a TOML file, environment and flags (each may be empty)."""
    env = os.environ if env is None else env
    data: dict[str, Any] = {}
    file = find_config_file(str(path) if path else None, env)
    if file is not None:
        try:
            raw = tomllib.loads(file.read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file {file} does not exist; pass an existing file to --config") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{file}: not valid TOML ({exc}); fix the syntax") from None
        _check_keys(raw, Config, str(file), "")
        data = _merge(data, raw)
    sources: dict[str, str] = {}  # top-level key -> where its value came from, for error messages
    for name in _ENV_PRECEDENCE:
        if env.get(name):
            data[ENV_KEYS[name]] = env[name]
            sources[ENV_KEYS[name]] = f"set by {name}={_shown(env[name])!r}"
    for name, (section, key) in ENV_SECTION_KEYS.items():
        if env.get(name):
            data[section] = {**data.get(section, {}), key: env[name]}
            sources[f"{section}.{key}"] = f"set by {name}={env[name]!r}"
    for key, value in (flags or {}).items():
        if value is not None:
            data[key] = value
            sources[key] = f"set by --{key.replace('_', '-')} {_shown(value)!r}"
    try:
        config = msgspec.convert(data, Config, strict=False)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"configuration: {_describe(exc, sources)}") from None
    try:
        validate(config)
    except ConfigError as exc:
        key = str(exc).split("'", 2)[1] if str(exc).startswith("key '") else ""
        if key in sources:
            raise ConfigError(str(exc).replace(f"key '{key}'", f"key '{key}' ({sources[key]})", 1)) from None
        raise
    return config


def _shown(value: Any) -> Any:
    """A value as an error message may quote it: URLs without their password."""
    if not isinstance(value, str):
        return value
    if value.startswith("s3://"):
        return redact_storage_url(value)
    try:
        return redact(value)
    except ValueError:
        return "***" if "@" in value else value


def _describe(exc: msgspec.ValidationError, sources: Mapping[str, str] | None = None) -> str:
    # msgspec says "Expected `int`, got `str` - at `$.limits.max_layers`"
    text = str(exc)
    if " - at `$." in text:
        message, where = text.split(" - at `$.", 1)
        key = where.rstrip("`")
        source = (sources or {}).get(key) or (sources or {}).get(key.split(".")[0].split("[")[0])
        return f"key '{key}'{f' ({source})' if source else ''}: {message}"
    return text


def validate(config: Config) -> None:
    """Raise ConfigError for values that parse but cannot work."""
    if not 0 <= config.port <= 65535:
        raise ConfigError(f"key 'port': {config.port} is not a TCP port; use 1-65535 (or 0 for any free port)")
    if not 1 <= config.workers <= 64:
        raise ConfigError(f"key 'workers': {config.workers} worker threads; use 1-64")
    if config.log_format not in ("text", "json"):
        raise ConfigError(f'key \'log_format\': {config.log_format!r}; use "text" or "json"')
    if config.dev_mode not in ("auto", "off"):
        raise ConfigError(f'key \'dev_mode\': {config.dev_mode!r}; use "auto" or "off"')
    if config.render.thumbnail_format not in ("webp", "jpeg"):
        raise ConfigError(f'key \'render.thumbnail_format\': {config.render.thumbnail_format!r}; use "webp" or "jpeg"')
    if not 0 <= config.render.png_compress_level <= 9:
        raise ConfigError("key 'render.png_compress_level': use 0-9")
    if config.render.pool not in ("process", "thread"):
        raise ConfigError(f'key \'render.pool\': {config.render.pool!r}; use "process" or "thread"')
    for key in ("max_renders_in_flight_per_user", "designs_per_minute"):
        if getattr(config.limits, key) < 0:
            raise ConfigError(f"key 'limits.{key}': {getattr(config.limits, key)}; use 0 or more")
    for key in ("request_head_seconds", "body_stall_seconds", "keep_alive_seconds", "max_connections"):
        if getattr(config.limits, key) <= 0:
            raise ConfigError(f"key 'limits.{key}': {getattr(config.limits, key)}; use a positive number")
    if config.limits.max_render_megapixels <= 0:
        raise ConfigError("key 'limits.max_render_megapixels': use a positive number")
    for key in ("asset_cache_mb", "helper_max_renders", "helper_max_memory_mb"):
        if getattr(config.render, key) < 0:
            raise ConfigError(f"key 'render.{key}': {getattr(config.render, key)}; use 0 or more")
    if not 0 <= config.render.worker_nice <= 19:
        raise ConfigError(f"key 'render.worker_nice': {config.render.worker_nice}; use 0-19")
    hooks = config.webhooks
    if not hooks.retry_schedule or any(d < 0 for d in hooks.retry_schedule):
        raise ConfigError("key 'webhooks.retry_schedule': use a non-empty list of delays in seconds, e.g. [5, 300]")
    if hooks.connect_timeout <= 0 or hooks.read_timeout <= 0 or hooks.max_response_bytes < 0:
        raise ConfigError("key 'webhooks': timeouts must be positive and max_response_bytes at least 0")
    if config.previews.per_minute < 1 or config.previews.max_concurrent < 1 or config.previews.cache_mb < 0:
        raise ConfigError("key 'previews': per_minute and max_concurrent must be at least 1, cache_mb at least 0")
    retention = config.retention
    if min(retention.task_history_days, retention.task_history_rows, retention.sent_mail_days) < 0:
        raise ConfigError("key 'retention': days and rows must be 0 or more (0 keeps everything)")
    if retention.worker_forget_seconds < 30:
        raise ConfigError("key 'retention.worker_forget_seconds': use at least 30 (a live worker beats every 2 s)")
    name = config.queue_name
    if not (name.isascii() and name.replace("_", "").isalnum() and len(name) <= 40):
        raise ConfigError(f"key 'queue_name': {config.queue_name!r}; use 1-40 letters, digits or _")
    stall, timeout = config.render.stall_seconds, config.render.timeout_seconds
    if not 0 < stall < timeout:
        raise ConfigError(
            f"key 'render.stall_seconds': {stall:g}; use more than 0 and less than render.timeout_seconds ({timeout:g})"
        )
    if config.render.max_attempts < 1:
        raise ConfigError("key 'render.max_attempts': use at least 1")
    _validate_storage(config)
    for key in ("database_url", "queue_url", "smtp_url"):
        url = getattr(config, key)
        if url and "://" not in url:
            raise ConfigError(f"key '{key}': {redact(url)!r} is not a URL; write it like scheme://host/name")
        if url:
            check_url(key, url)
    if config.public_url:
        check_url("public_url", config.public_url)
        public = urlsplit(config.public_url)
        if public.scheme not in ("http", "https") or not public.hostname:
            raise ConfigError(
                f"key 'public_url': {config.public_url!r}; write it like https://shop.example.com "
                "(the base clients use to reach this API)"
            )
    if config.smtp_url and urlsplit(config.smtp_url).scheme not in ("smtp", "smtps"):
        raise ConfigError(f"key 'smtp_url': use smtp://host:port or smtps://host:port, not {redact(config.smtp_url)!r}")


def _validate_storage(config: Config) -> None:
    if config.storage_url:
        try:
            parse_s3_url(config.storage_url)
        except ValueError as exc:
            raise ConfigError(f"key 'storage_url': {redact_storage_url(config.storage_url)!r}: {exc}") from None
    settings = config.storage
    if settings.addressing not in ("auto", "path", "virtual"):
        raise ConfigError(f'key \'storage.addressing\': {settings.addressing!r}; use "auto", "path" or "virtual"')
    if settings.serve not in ("proxy", "redirect"):
        raise ConfigError(f'key \'storage.serve\': {settings.serve!r}; use "proxy" or "redirect"')
    if settings.endpoint_url and urlsplit(settings.endpoint_url).scheme not in ("http", "https"):
        raise ConfigError(
            f"key 'storage.endpoint_url': {settings.endpoint_url!r}; write it like "
            "http://127.0.0.1:8333 or https://s3.example.com"
        )
    if not 1 <= settings.presign_seconds <= 7 * 24 * 3600:
        raise ConfigError("key 'storage.presign_seconds': use 1-604800 (S3 allows at most 7 days)")
    if settings.cache_mb < 0:
        raise ConfigError("key 'storage.cache_mb': use 0 (off) or more")
    if settings.timeout_seconds <= 0 or settings.orphan_grace_seconds <= 0:
        raise ConfigError("key 'storage.timeout_seconds' / 'storage.orphan_grace_seconds': use a positive number")


def ensure_data_dir(config: Config) -> Path:
    """Create the data dir tree and prove it is writable, or raise ConfigError."""
    root = config.data_path
    try:
        # Customers' uploads, designs and the key hashes: this user's alone (0700 dirs, 0600 databases).
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        for sub in ("renders", "assets", "outbox"):
            (root / sub).mkdir(mode=0o700, parents=True, exist_ok=True)
        for url in (config.effective_database_url, config.effective_queue_url):
            if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
                create_private_file(Path(url.removeprefix("sqlite:///")))
        # A probe of our own: several processes may start on one data dir at once.
        fd, probe = tempfile.mkstemp(dir=root, prefix=".write-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise ConfigError(
            f"key 'data_dir': {root} is not writable ({exc.strerror}); "
            "pass --data-dir or CUSTOMIFY_DATA_DIR with a writable directory"
        ) from None
    return root


def create_private_file(path: Path) -> None:
    """Create `path` readable by this user only, if it does not exist (SQLite gives its -wal and -shm
    files the database file's mode)."""
    if path.exists():
        return
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))


def describe_fields(struct: type[msgspec.Struct] = Config, prefix: str = "") -> list[tuple[str, str]]:
    """(dotted key, docstring) for every setting, for docs and the docs test."""
    import inspect

    out: list[tuple[str, str]] = []
    source = inspect.getsource(struct)
    for name in struct.__struct_fields__:
        doc = ""
        marker = f"    {name}:"
        idx = source.find(marker)
        if idx >= 0:
            after = source[idx:].split("\n", 2)
            if len(after) > 1 and after[1].strip().startswith('"""'):
                doc = after[1].strip().strip('"')
        sub = _SECTIONS.get(name) if not prefix else None
        if sub is not None:
            out.extend(describe_fields(sub, f"{name}."))
        else:
            out.append((f"{prefix}{name}", doc))
    return out
