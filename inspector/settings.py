"""One settings file, driven by environment variables with safe defaults.

With nothing set, this is a production-mode (DEBUG off) single-process instance on SQLite
and the in-memory channel layer. `DATABASE_URL` and `REDIS_URL` switch to PostgreSQL and
Redis for deployments with several processes.
"""

import os
import secrets
from pathlib import Path

import dj_database_url

BASE_DIR = Path(__file__).resolve().parent.parent


def env_bool(name: str, default: bool = False) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    return int(value) if value else default


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
# Capture URLs are pasted into providers under whatever name the instance has, so every host is
# accepted unless the deployment narrows it.
ALLOWED_HOSTS = [h.strip() for h in os.environ.get("ALLOWED_HOSTS", "*").split(",") if h.strip()]
CSRF_TRUSTED_ORIGINS = [
    o.strip() for o in os.environ.get("CSRF_TRUSTED_ORIGINS", "").split(",") if o.strip()
]
PUBLIC_URL = os.environ.get("PUBLIC_URL", "").rstrip("/")
if PUBLIC_URL:
    # The page's forms post from the public origin, which a TLS proxy hides from Django.
    CSRF_TRUSTED_ORIGINS.append("/".join(PUBLIC_URL.split("/")[:3]))
if env_bool("TRUST_X_FORWARDED_PROTO"):
    # Only behind a proxy that sets it: then https:// links and secure-cookie checks hold.
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

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
            ],
        },
    }
]

_sqlite_path = DATA_DIR / "inspector.sqlite3"
DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL") or f"sqlite:///{_sqlite_path}",
        conn_max_age=int(os.environ.get("CONN_MAX_AGE", "60")),
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
    # A commit returns once it is written, without waiting for the disk: the same promise as
    # SQLite in WAL mode with synchronous=NORMAL above (a crash of the machine, not of the
    # database, can lose the last moment of commits). It lets the capture writer commit
    # without a disk flush per group. PG_SYNCHRONOUS_COMMIT=on waits for the disk.
    sync = os.environ.get("PG_SYNCHRONOUS_COMMIT", "off").strip().lower()
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

# Captures never go through Django; this bounds the JSON API and the page's forms, which may
# carry an edited body for a resend (base64 in JSON: a third more than the body).
APPEND_SLASH = True

# Content-Security-Policy: no inline script, nothing from elsewhere. Captured content is
# hostile; this is the last line of defence if something ever slips past escaping.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
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

# The product's own settings (see the README's configuration table).
MAX_BODY_BYTES = env_int("MAX_BODY_BYTES", 10 * 1024 * 1024)
DATA_UPLOAD_MAX_MEMORY_SIZE = MAX_BODY_BYTES * 4 // 3 + 1024 * 1024
CAPTURES_PER_BIN = env_int("CAPTURES_PER_BIN", 500)
BIN_EXPIRE_DAYS = env_int("BIN_EXPIRE_DAYS", 30)
# Requests per second per bin (per process); 0 is off, so a load test runs at full speed.
BIN_RATE_LIMIT = float(os.environ.get("BIN_RATE_LIMIT", "0") or 0)

# Resend and auto-forward targets. "deny" forbids loopback, private and link-local targets
# (checked on the resolved address) for instances that face the internet. Cloud metadata
# addresses are always forbidden unless their host is listed in RESEND_ALLOW_HOSTS.
RESEND_PRIVATE_TARGETS = os.environ.get("RESEND_PRIVATE_TARGETS", "allow").strip().lower()
if RESEND_PRIVATE_TARGETS not in {"allow", "deny"}:
    raise ValueError("RESEND_PRIVATE_TARGETS must be allow or deny")
RESEND_ALLOW_HOSTS = {
    h.strip().lower() for h in os.environ.get("RESEND_ALLOW_HOSTS", "").split(",") if h.strip()
}
RESEND_TIMEOUT = float(os.environ.get("RESEND_TIMEOUT", "10") or 10)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    "loggers": {"django.channels.server": {"level": "WARNING"}},
}

# --- server limits ---
# What one slow or hostile client can hold in the server process (see bins/server.py); 0 = off.


def _server_limit(name: str, default: int) -> int:
    try:
        value = env_int(name, default)
    except ValueError:
        value = -1
    if value < 0:
        raise ValueError(f"{name} must be a whole number, 0 (off) or more")
    return value


# Seconds a connection may send nothing while no request is being answered (before its first
# request and between keep-alive requests).
HTTP_IDLE_TIMEOUT = _server_limit("HTTP_IDLE_TIMEOUT", 60)
# Seconds from the first byte of a request to its last (headers and body); answering is not
# limited (a bin's reply may be delayed on purpose).
HTTP_REQUEST_TIMEOUT = _server_limit("HTTP_REQUEST_TIMEOUT", 60)
# Unsent websocket data a client may leave in the server before its stream is closed with 4000
# (the client reconnects with ?after= and misses nothing).
WS_BUFFER_BYTES = _server_limit("WS_BUFFER_BYTES", 4 * 1024 * 1024)
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # SQLite keeps its own copy of each value bound to a prepared statement until that statement
    # runs again, and Python's sqlite3 keeps up to 128 prepared statements per connection. The
    # capture writer's multi-row INSERT has one SQL text per batch size, so after a burst of
    # large bodies hundreds of MiB of copies would stay. No statement cache: each query is
    # prepared again (a few microseconds), and nothing bound outlives its statement.
    DATABASES["default"]["OPTIONS"]["cached_statements"] = 0
