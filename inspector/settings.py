"""One settings file, driven by environment variables with safe defaults.

With nothing set, this is a production-mode (DEBUG off) single-process instance on SQLite
and the in-memory channel layer. `DATABASE_URL` and `REDIS_URL` switch to PostgreSQL and
Redis for deployments with several processes.
"""

import ipaddress
import math
import os
import secrets
import sys
from pathlib import Path
from urllib.parse import urlsplit

import dj_database_url
from csp.constants import NONCE

BASE_DIR = Path(__file__).resolve().parent.parent


def config_error(message: str) -> SystemExit:
    """Stop at start with a message naming the variable (the contract: a bad value never runs)."""
    return SystemExit(f"Configuration error: {message}")


def env_bool(name: str, default: bool = False) -> bool:
    value = os.environ.get(name, "").strip().lower()
    if not value:
        return default
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise config_error(f"{name} must be on or off (1/0, true/false), not {value!r}")


def env_int(name: str, default: int) -> int:
    """A whole number >= 0 (every limit: 0 means unlimited or off)."""
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    try:
        number = int(value)
    except ValueError:
        raise config_error(f"{name} must be a whole number, not {value!r}") from None
    if number < 0:
        raise config_error(f"{name} must be 0 or more, not {number}")
    return number


def env_float(name: str, default: float, *, minimum: float = 0.0) -> float:
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    try:
        number = float(value)
    except ValueError:
        raise config_error(f"{name} must be a number, not {value!r}") from None
    if not math.isfinite(number) or number < minimum:
        raise config_error(f"{name} must be a number of at least {minimum:g}, not {value!r}")
    return number


def env_list(name: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, "").split(",") if item.strip()]


def env_origin(name: str) -> str:
    """An http(s) origin such as https://hooks.example.com (no path), or "" when unset."""
    value = os.environ.get(name, "").strip().rstrip("/")
    if not value:
        return ""
    parts = urlsplit(value)
    if parts.scheme not in {"http", "https"} or not parts.hostname or parts.path.strip("/"):
        raise config_error(f"{name} must be like https://hooks.example.com, not {value!r}")
    return value


DATA_DIR = Path(os.environ.get("DATA_DIR") or BASE_DIR / "data")
DATA_DIR.mkdir(parents=True, exist_ok=True)


def _secret_key() -> str:
    # Generated once and kept in the data folder, so a restart keeps sessions and CSRF
    # tokens valid. Several processes must share one: set SECRET_KEY in a deployment.
    if os.environ.get("SECRET_KEY"):
        return os.environ["SECRET_KEY"]
    path = DATA_DIR / "secret_key"
    if not path.exists():
        # Written whole under another name, then moved: a process starting at the same moment
        # reads either no file or the whole key, and the first to move it wins.
        tmp = DATA_DIR / f".secret_key.{os.getpid()}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(50))
        try:
            os.link(tmp, path)  # fails if another process got there first: keep theirs
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    return path.read_text().strip()


SECRET_KEY = _secret_key()
DEBUG = env_bool("DEBUG")
PUBLIC_URL = env_origin("PUBLIC_URL")
# A separate origin for capture URLs: a bin's reply (whatever its owner configured) then never
# shares an origin with the pages. That host serves captures only; the app's host no captures.
CAPTURE_URL = env_origin("CAPTURE_URL")
# Host names the pages and API answer to. Not "*": a DNS-rebinding page (attacker.example
# resolving to 127.0.0.1) could otherwise drive a laptop instance through the visitor's browser.
LOOPBACK_HOSTS = ["localhost", "127.0.0.1", "[::1]"]
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS") or [
    *LOOPBACK_HOSTS,
    *(
        [
            urlsplit(PUBLIC_URL).netloc.rsplit(":", 1)[0]
            if "]" in PUBLIC_URL
            else urlsplit(PUBLIC_URL).hostname
        ]
        if PUBLIC_URL
        else []
    ),
]
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS")
if PUBLIC_URL:
    # The page's forms post from the public origin, which a TLS proxy hides from Django.
    CSRF_TRUSTED_ORIGINS.append(PUBLIC_URL)
TRUST_X_FORWARDED_PROTO = env_bool("TRUST_X_FORWARDED_PROTO")
if TRUST_X_FORWARDED_PROTO:
    # Only behind a proxy that sets it: then https:// links and secure-cookie checks hold.
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")


def _bind_addresses() -> list[str]:
    """Where this server listens: `HOST` (what `make run` binds), else Daphne's own arguments
    (`-b/--bind`, default 127.0.0.1). A unix socket or file descriptor says nothing: unknown."""
    if os.environ.get("HOST", "").strip():
        return [os.environ["HOST"].strip()]
    args = sys.argv[1:] if Path(sys.argv[0]).name == "daphne" else []
    binds = [args[i + 1] for i, a in enumerate(args[:-1]) if a in {"-b", "--bind"}]
    binds += [a.split("=", 1)[1] for a in args if a.startswith("--bind=")]
    if any(a in {"-u", "--unix-socket", "--fd", "-e", "--endpoint"} for a in args):
        binds.append("unknown")
    return binds or ["127.0.0.1"]


def _is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address.strip("[]")).is_loopback
    except ValueError:
        return address == "localhost"


LISTENS_ON_LOOPBACK_ONLY = all(_is_loopback(a) for a in _bind_addresses())

INSTALLED_APPS = [
    "daphne",
    "django.contrib.contenttypes",
    "django.contrib.staticfiles",
    "channels",
    "django_htmx",
    "csp",
    "bins",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "bins.middleware.noindex",
]

ROOT_URLCONF = "inspector.urls"
ASGI_APPLICATION = "inspector.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.template.context_processors.csrf",
                "bins.context_processors.page",
            ],
        },
    }
]

_sqlite_path = DATA_DIR / "inspector.sqlite3"
DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL") or f"sqlite:///{_sqlite_path}",
        conn_max_age=env_int("CONN_MAX_AGE", 60),
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets the page read while the capture writer commits; the busy timeout waits out a
    # concurrent writer instead of failing; IMMEDIATE takes the write lock up front so two
    # writers never deadlock upgrading a read lock.
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 20,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    # Tests share the database with real server processes, so it has to be a file; one per
    # test run, so that two runs never share it.
    DATABASES["default"]["TEST"] = {"NAME": str(DATA_DIR / f"test-{os.getpid()}.sqlite3")}
else:
    DATABASES["default"]["TEST"] = {"NAME": f"test_{DATABASES['default']['NAME']}_{os.getpid()}"}
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # Durable by default: a capture answered 2xx survives a crash of PostgreSQL or of the
    # machine, because its commit waited for the WAL flush (one flush per commit group, so the
    # capture path pays it once per group). PG_SYNCHRONOUS_COMMIT=off is the opt-in fast mode:
    # commits return before the flush, and a crash of PostgreSQL or the machine can lose the
    # last fraction of a second of acknowledged captures.
    sync = os.environ.get("PG_SYNCHRONOUS_COMMIT", "on").strip().lower() or "on"
    if sync not in {"on", "off"}:
        raise config_error(f"PG_SYNCHRONOUS_COMMIT must be on or off, not {sync!r}")
    DATABASES["default"].setdefault("OPTIONS", {})["options"] = f"-c synchronous_commit={sync}"

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = os.environ.get("REDIS_URL", "")
if REDIS_URL:
    # The PubSub layer: group messages go through Redis PUB/SUB, with no per-channel capacity
    # to overflow. The default RedisChannelLayer silently drops group messages once a channel
    # holds `capacity` (100) messages, which a busy bin reaches at once.
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {"hosts": [REDIS_URL]},
        }
    }
else:
    # The in-memory layer also drops group messages for a full channel, silently: give it room.
    # Live pushes are batched per bin, so one message carries many captures.
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels.layers.InMemoryChannelLayer",
            "CONFIG": {"capacity": 10_000, "expiry": 60},
        }
    }

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "/static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = DATA_DIR / "staticfiles"
STATIC_ROOT.mkdir(exist_ok=True)
# Served from the finders, so `make run` needs no collectstatic step.
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = DEBUG

APPEND_SLASH = True

# Content-Security-Policy: scripts and styles only by this response's nonce, never by origin.
# `'self'` would also allow any capture URL on this origin, and a bin can answer
# `application/javascript`: that would be an allowed script for any injection that slipped past
# escaping. Captured content is hostile; this is the last line of defence.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'none'"],
        "script-src": [NONCE],
        "style-src": [NONCE],
        "img-src": ["'self'", "data:"],
        "connect-src": ["'self'"],
        "frame-ancestors": ["'none'"],
        "base-uri": ["'none'"],
        "form-action": ["'self'"],
        "object-src": ["'none'"],
    }
}
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
CSRF_COOKIE_SAMESITE = "Lax"

# The product's own settings (see the README's configuration table). Every limit takes 0 for
# "unlimited" (or "off"); a value that is not a number, or negative, stops the server at start.
MAX_BODY_BYTES = env_int("MAX_BODY_BYTES", 10 * 1024 * 1024)
# Captures never go through Django; this bounds the JSON API and the page's forms, which may
# carry an edited body for a resend (base64 in JSON: a third more than the body).
DATA_UPLOAD_MAX_MEMORY_SIZE = MAX_BODY_BYTES * 4 // 3 + 1024 * 1024 if MAX_BODY_BYTES else None
CAPTURES_PER_BIN = env_int("CAPTURES_PER_BIN", 500)
# Lists and live streams carry a capture's body inline up to this size; above it the body is
# left out (`body_omitted`) and a client fetches the capture or its /raw. A live frame must stay
# under the 1 MiB that Daphne and the usual websocket clients accept, whatever a capture holds.
INLINE_BODY_BYTES = env_int("INLINE_BODY_BYTES", 64 * 1024)
if INLINE_BODY_BYTES > 256 * 1024:
    raise config_error(f"INLINE_BODY_BYTES must be at most 262144, not {INLINE_BODY_BYTES}")
# Auto-forward attempts per capture: a failed one (no answer, 408, 429, 5xx) is tried again
# with backoff (1 s, 5 s, 30 s, 2 min, 10 min, then hourly); 0 tries forever.
FORWARD_MAX_ATTEMPTS = env_int("FORWARD_MAX_ATTEMPTS", 5)
BIN_EXPIRE_DAYS = env_int("BIN_EXPIRE_DAYS", 30)
# How often expired bins are looked for (by one process of a cluster at a time); 0 = never
# (then `manage.py prune` from cron does it).
EXPIRY_SWEEP_SECONDS = env_int("EXPIRY_SWEEP_SECONDS", 600)
# Requests per second per bin; 0 is off, so a load test runs at full speed. Shared by every
# process through Redis when REDIS_URL is set.
BIN_RATE_LIMIT = env_float("BIN_RATE_LIMIT", 0)
# Resends per second per bin (page and API): a person clicking never gets near 5 a second,
# while one 10 MiB capture resent in a loop would turn this instance into an amplifier.
RESEND_RATE_LIMIT = env_float("RESEND_RATE_LIMIT", 5)
# New bins per minute per client address (page and API): crawlers and scripts cannot fill
# the database with bins.
BIN_CREATE_RATE_LIMIT = env_int("BIN_CREATE_RATE_LIMIT", 60)

# Resend and auto-forward targets. "deny" forbids loopback, private and link-local targets
# (checked on the resolved address) for instances that face the internet; the default allows
# them only when this server listens on loopback alone (a laptop instance, whose point is to
# send to localhost). Cloud metadata addresses are always forbidden unless their host is listed
# in RESEND_ALLOW_HOSTS.
RESEND_PRIVATE_TARGETS = os.environ.get("RESEND_PRIVATE_TARGETS", "").strip().lower() or (
    "allow" if LISTENS_ON_LOOPBACK_ONLY else "deny"
)
if RESEND_PRIVATE_TARGETS not in {"allow", "deny"}:
    raise config_error(
        f"RESEND_PRIVATE_TARGETS must be allow or deny, not {RESEND_PRIVATE_TARGETS!r}"
    )
RESEND_ALLOW_HOSTS = {h.lower() for h in env_list("RESEND_ALLOW_HOSTS")}
RESEND_TIMEOUT = env_float("RESEND_TIMEOUT", 10, minimum=0.1)

# What one slow or hostile client can hold in the server process (see bins/server.py).
# Seconds a connection may send nothing while no request is being answered (before its first
# request and between keep-alive requests).
HTTP_IDLE_TIMEOUT = env_int("HTTP_IDLE_TIMEOUT", 60)
# Seconds from the first byte of a request to its last (headers and body); answering is not
# limited (a bin's reply may be delayed on purpose).
HTTP_REQUEST_TIMEOUT = env_int("HTTP_REQUEST_TIMEOUT", 60)
# Unsent websocket data a client may leave in the server before its stream is closed with 4000
# (the client reconnects with ?after= and misses nothing).
WS_BUFFER_BYTES = env_int("WS_BUFFER_BYTES", 4 * 1024 * 1024)

LOG_LEVEL = os.environ.get("LOG_LEVEL", "").strip().upper() or "INFO"
if LOG_LEVEL not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
    raise config_error(f"LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR, not {LOG_LEVEL!r}")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {"django.channels.server": {"level": "WARNING"}},
}
