"""Django settings for Parseq, read from the environment (see README: Configuration)."""

import os
from pathlib import Path

from parseq.env import (
    ConfigurationError,
    database_from_url,
    env_bool,
    env_choice,
    env_int,
    env_list,
    env_networks,
    env_str,
)
from parseq.host import memory_of_this_host, worker_slots_for

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("PARSEQ_VAR_DIR", str(BASE_DIR / "var")))
# The database file and media live here: no other user (a sandbox's included) may read them.
VAR_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)
if VAR_DIR.stat().st_uid == os.geteuid():
    VAR_DIR.chmod(0o700)

DEBUG = env_bool("DEBUG", False)
SECRET_KEY = env_str("SECRET_KEY")
if SECRET_KEY is None:
    if not DEBUG:
        raise ConfigurationError("SECRET_KEY must be set when DEBUG is false")
    SECRET_KEY = "parseq-development-only-insecure-key"  # noqa: S105 - DEBUG only
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

# Behind HTTPS (README: Deploying): secure cookies, a redirect from plain HTTP (except /healthz,
# which container health checks ask over plain HTTP), and HSTS once you are sure of it.
HTTPS = env_bool("PARSEQ_HTTPS", False)
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = SECURE_SSL_REDIRECT = HTTPS
SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
SECURE_HSTS_SECONDS = env_int("PARSEQ_HSTS_SECONDS", 0, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("PARSEQ_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = env_bool("PARSEQ_HSTS_PRELOAD", False)
# Only behind a proxy that sets X-Forwarded-Proto itself (and drops the client's): else anyone could claim HTTPS.
if env_bool("PARSEQ_TRUST_X_FORWARDED_PROTO", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
X_FRAME_OPTIONS = "DENY"
# Where users reach Parseq: links that leave it (alerts) start with this.
# PORT is the all-in-one process's (`make run`, runparseq): its links name the port it listens on.
LOCAL_PORT = env_int("PORT", 8000, minimum=1)
PUBLIC_URL = env_str("PARSEQ_PUBLIC_URL", f"http://127.0.0.1:{LOCAL_PORT}")
if not PUBLIC_URL.startswith(("http://", "https://")) or not PUBLIC_URL.split("://", 1)[1].strip("/"):
    raise ConfigurationError(f"PARSEQ_PUBLIC_URL must start with http:// or https://, not {PUBLIC_URL!r}")
PUBLIC_URL = PUBLIC_URL.rstrip("/")

INSTALLED_APPS = [
    "parseq.admin_site.ParseqAdminConfig",  # django.contrib.admin, Parseq's apps first
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "parseq.worker",  # before django_dramatiq: its `rundramatiq` replaces theirs
    "django_dramatiq",
    "django_apscheduler",
    "rest_framework",
    "rest_framework.authtoken",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "parseq.core",
    "parseq.scheduling",
    "parseq.api",
    "parseq.alerts",
    "parseq.access",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Static files from the web process itself (after `collectstatic`): no separate server to run.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    # Before any authentication: a write from another site is refused, whatever credentials it carries.
    "parseq.access.crosssite.CrossSiteWriteGuard",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "parseq.urls"
WSGI_APPLICATION = "parseq.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        # Parseq's look of the whole admin (base_site.html, index.html) comes before the admin's own.
        "DIRS": [BASE_DIR / "parseq" / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": database_from_url("DATABASE_URL", env_str("DATABASE_URL", f"sqlite:///{VAR_DIR}/parseq.sqlite3"))
}
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    Path(DATABASES["default"]["NAME"]).parent.mkdir(mode=0o700, parents=True, exist_ok=True)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = (
    []
    if DEBUG
    else [
        {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
        {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    ]
)

LANGUAGE_CODE = "en-us"
TIME_ZONE = env_str("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = Path(env_str("PARSEQ_STATIC_ROOT", str(VAR_DIR / "static")))
MEDIA_ROOT = VAR_DIR / "media"
# Media is never served as is: results go through the download view with its headers. An empty
# MEDIA_URL would let a media-serving handler (as in Django's live test server) claim every path.
MEDIA_URL = "/media-is-not-served/"

# Scripts and result files: local files by default, S3 when a bucket is named (README: S3).
# Credentials are boto3's own: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or an instance role; never copied here.
S3_BUCKET = env_str("PARSEQ_S3_BUCKET")
if S3_BUCKET:
    _endpoint_url = env_str("PARSEQ_S3_ENDPOINT_URL")
    if _endpoint_url and not _endpoint_url.startswith(("http://", "https://")):
        raise ConfigurationError(f"PARSEQ_S3_ENDPOINT_URL must start with http:// or https://, not {_endpoint_url!r}")
    _default_storage = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": S3_BUCKET,
            "endpoint_url": _endpoint_url,
            # Signatures name the region: Yandex Object Storage wants ru-central1. Unset: boto3's (AWS_DEFAULT_REGION).
            "region_name": env_str("PARSEQ_S3_REGION"),
            "addressing_style": env_choice("PARSEQ_S3_ADDRESSING_STYLE", "auto", ["auto", "path", "virtual"]),
            # SigV4 everywhere, presigned URLs included (boto3 would presign some with the retired SigV2).
            "signature_version": "s3v4",
            # Keys start with this prefix (a "folder"), so that Parseq can share a bucket.
            "location": env_str("PARSEQ_S3_PREFIX", "").strip("/"),
            "default_acl": None,
            # The storage's own URLs stay unsigned: a download redirect signs its URL itself (PARSEQ_DOWNLOADS).
            "querystring_auth": False,
            "file_overwrite": True,
            # A file read through the storage is fetched whole first: past 1 MiB it waits on disk, not in memory.
            "max_memory_size": 1024 * 1024,
        },
    }
else:
    _default_storage = {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": str(MEDIA_ROOT)},
    }
# How result files leave: `stream` through Parseq, or `redirect` to a short-lived presigned URL of the bucket.
DOWNLOADS = env_choice("PARSEQ_DOWNLOADS", "stream", ["stream", "redirect"])
DOWNLOAD_URL_EXPIRY = env_int("PARSEQ_DOWNLOAD_URL_EXPIRY", 300, minimum=1)
if DOWNLOADS == "redirect" and not S3_BUCKET:
    raise ConfigurationError("PARSEQ_DOWNLOADS=redirect needs PARSEQ_S3_BUCKET: only S3 objects have presigned URLs")
if DOWNLOAD_URL_EXPIRY > 7 * 24 * 3600:
    raise ConfigurationError(f"PARSEQ_DOWNLOAD_URL_EXPIRY must be at most 604800 (7 days), not {DOWNLOAD_URL_EXPIRY}")
FILE_UPLOAD_PERMISSIONS = 0o600
FILE_UPLOAD_DIRECTORY_PERMISSIONS = 0o700
STORAGES = {
    "default": _default_storage,
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}

# Runs go through RabbitMQ when a broker URL is set; otherwise through an in-memory
# broker whose worker lives in the same process (`manage.py runparseq`).
BROKER_URL = env_str("PARSEQ_BROKER_URL")
if BROKER_URL and not BROKER_URL.startswith(("amqp://", "amqps://")):
    raise ConfigurationError(f"PARSEQ_BROKER_URL must start with amqp:// or amqps://, not {BROKER_URL!r}")
# A database connection or query that hears nothing from PostgreSQL for this long fails (parseq/database.py).
DATABASE_TIMEOUT = env_int("PARSEQ_DATABASE_TIMEOUT", 10, minimum=1)
# How often a worker process writes what its running runs printed (milliseconds): the run page and the API show it.
LIVE_LOG_MS = env_int("PARSEQ_LIVE_LOG_MS", 500, minimum=100)
# How long a request or a scheduler round waits for the broker to confirm a run's message (parseq/core/sending.py).
BROKER_TIMEOUT = env_int("PARSEQ_BROKER_TIMEOUT", 5, minimum=1)
_dramatiq_middleware = [
    "dramatiq.middleware.AgeLimit",
    "dramatiq.middleware.TimeLimit",
    "dramatiq.middleware.Callbacks",
    "dramatiq.middleware.Retries",
    "django_dramatiq.middleware.DbConnectionsMiddleware",
    "parseq.core.middleware.BoundedDatabaseWaits",
    "parseq.core.middleware.RunSlots",
    "parseq.core.middleware.LostRunReaper",
    "parseq.core.middleware.DeadLetteredRuns",
    "parseq.core.middleware.Draining",
    "parseq.core.middleware.CloseDbConnections",
]
if BROKER_URL:
    DRAMATIQ_BROKER = {
        "BROKER": "dramatiq.brokers.rabbitmq.RabbitmqBroker",
        "OPTIONS": {"url": BROKER_URL, "confirm_delivery": True},
        "MIDDLEWARE": _dramatiq_middleware,
    }
else:
    DRAMATIQ_BROKER = {"BROKER": "dramatiq.brokers.stub.StubBroker", "MIDDLEWARE": _dramatiq_middleware}
DRAMATIQ_AUTODISCOVER_MODULES = ["tasks"]

# The sandbox that runs parser scripts.
# Unset: the strongest that works here (bwrap, else subprocess), decided at the first run.
SANDBOX_BACKEND = env_choice("PARSEQ_SANDBOX", None, [None, "subprocess", "bwrap", "docker"])
SANDBOX_PYTHON = env_str("PARSEQ_SANDBOX_PYTHON", str(BASE_DIR / ".venv-sandbox" / "bin" / "python"))
# What scripts may import: the sandbox's top-level libraries (the lock beside it adds their dependencies).
SANDBOX_REQUIREMENTS = BASE_DIR / "sandbox-image" / "requirements.in"
# With subprocess and bwrap, fork each run from a zygote that has imported the libraries (README: Isolation).
SANDBOX_WARM_START = env_bool("PARSEQ_WARM_START", True)
RUN_TIMEOUT = env_int("PARSEQ_RUN_TIMEOUT", 300, minimum=1)
# RabbitMQ cancels a consumer that holds a message for over 30 minutes (its default consumer_timeout):
# raise that first if you raise this.
MAX_RUN_TIMEOUT = env_int("PARSEQ_MAX_RUN_TIMEOUT", 1500, minimum=1)
LOG_LIMIT = env_int("PARSEQ_LOG_LIMIT", 1024 * 1024, minimum=1024)
# Limits of every run (README: Isolation); a parser may set its own memory limit.
MEMORY_LIMIT_MB = env_int("PARSEQ_MEMORY_LIMIT_MB", 1024, minimum=64)
PROCESS_LIMIT = env_int("PARSEQ_PROCESS_LIMIT", 64, minimum=4)
OPEN_FILES_LIMIT = env_int("PARSEQ_OPEN_FILES_LIMIT", 256, minimum=32)
FILE_SIZE_LIMIT_MB = env_int("PARSEQ_FILE_SIZE_LIMIT_MB", 100, minimum=1)
DISK_LIMIT_MB = env_int("PARSEQ_DISK_LIMIT_MB", 200, minimum=8)
RESULT_SIZE_LIMIT_MB = env_int("PARSEQ_RESULT_SIZE_LIMIT_MB", 100, minimum=1)
RESULT_FILES_LIMIT = env_int("PARSEQ_RESULT_FILES_LIMIT", 1000, minimum=1)
# How long past its timeout a run may stay `running` before it counts as lost.
# It covers collecting the output and storing the files, so it is never tiny.
RUN_GRACE = env_int("PARSEQ_RUN_GRACE", 60, minimum=5)
REAPER_INTERVAL = env_int("PARSEQ_REAPER_INTERVAL", 10, minimum=1)
# A worker renews the lease of its running runs this often; a run whose lease is LOST_RUN_SECONDS old has lost
# its worker and is rerun (README: When things fail).
HEARTBEAT_SECONDS = env_int("PARSEQ_HEARTBEAT_SECONDS", 5, minimum=1)
LOST_RUN_SECONDS = env_int("PARSEQ_LOST_RUN_SECONDS", 30, minimum=3)
if REAPER_INTERVAL > LOST_RUN_SECONDS - 2 * HEARTBEAT_SECONDS:
    raise ConfigurationError(
        f"PARSEQ_REAPER_INTERVAL ({REAPER_INTERVAL}) must be at most PARSEQ_LOST_RUN_SECONDS minus twice "
        f"PARSEQ_HEARTBEAT_SECONDS ({LOST_RUN_SECONDS - 2 * HEARTBEAT_SECONDS}): a database outage between two "
        "checks of the reaper would otherwise go unseen and let it rerun live runs"
    )
if LOST_RUN_SECONDS < 3 * HEARTBEAT_SECONDS:
    raise ConfigurationError(
        f"PARSEQ_LOST_RUN_SECONDS ({LOST_RUN_SECONDS}) must be at least 3 times PARSEQ_HEARTBEAT_SECONDS "
        f"({HEARTBEAT_SECONDS}): a live worker must renew its runs several times before they count as lost"
    )
# A stopping worker lets its runs go on this long, then stops their sandboxes and hands them back to the others
# (README: When things fail). Keep it under `rundramatiq --worker-shutdown-timeout`, which abandons them.
DRAIN_SECONDS = env_int("PARSEQ_DRAIN_SECONDS", 60, minimum=0)
# A scraper sends it as `Authorization: Bearer <token>` to read /metrics; unset, only staff may.
METRICS_TOKEN = env_str("PARSEQ_METRICS_TOKEN", "")
# /healthz says `degraded` when the local storage has less free space than this.
STORAGE_MIN_FREE_MB = env_int("PARSEQ_STORAGE_MIN_FREE_MB", 1024, minimum=0)
# How long a worker keeps retrying to record a finished run while the database is unreachable.
RECORD_RETRY_SECONDS = env_int("PARSEQ_RECORD_RETRY_SECONDS", 600, minimum=0)
# A run `enqueued` this long is sent to the workers again (its message may be lost); the claim makes that safe.
RESEND_ENQUEUED_AFTER = env_int("PARSEQ_RESEND_ENQUEUED_AFTER", 300, minimum=10)
INPROCESS_WORKER_THREADS = env_int("PARSEQ_WORKER_THREADS", 2, minimum=1)
# How many runs one worker host (`rundramatiq`, all its processes together) takes at once. Runs mostly wait on
# the network and a sleeping warm run takes about 8 MiB: by default one slot per 24 MiB of memory (README: Scale).
WORKER_SLOTS = env_int("PARSEQ_WORKER_SLOTS", worker_slots_for(memory_of_this_host()), minimum=1)
# Retention (README: Retention): finished runs and their files go; a parser's own limits win over these.
# Keep each parser's newest N finished runs; unset keeps any number.
KEEP_RUNS = env_int("PARSEQ_KEEP_RUNS", None, minimum=1)
# Keep finished runs younger than D days; unset keeps any age.
KEEP_DAYS = env_int("PARSEQ_KEEP_DAYS", None, minimum=1)
# Runs in error are kept this many times longer (both limits), for looking into failures.
FAILED_RUNS_KEEP_FACTOR = env_int("PARSEQ_FAILED_RUNS_KEEP_FACTOR", 3, minimum=1)
# Seconds between two cleanups by the active scheduler.
PRUNE_INTERVAL = env_int("PARSEQ_PRUNE_INTERVAL", 3600, minimum=1)

# Sign-ins (README: Sign-ins). Failed ones are counted in the database, per user and per client address;
# at the limit within the window, further attempts are refused without verifying the password.
LOGIN_FAILURES_PER_USER = env_int("PARSEQ_LOGIN_FAILURES_PER_USER", 5, minimum=1)
LOGIN_FAILURES_PER_ADDRESS = env_int("PARSEQ_LOGIN_FAILURES_PER_ADDRESS", 20, minimum=1)
LOGIN_LOCKOUT_SECONDS = env_int("PARSEQ_LOGIN_LOCKOUT_SECONDS", 900, minimum=1)
# Behind N proxies that each append to X-Forwarded-For, the client is the Nth entry from its right;
# 0 trusts no such header (it is anyone's to forge) and uses the connection's address.
TRUSTED_PROXY_HOPS = env_int("PARSEQ_TRUSTED_PROXY_HOPS", 0, minimum=0)
# Seconds a web process accepts Basic credentials it verified again without hashing them; 0 hashes every request.
BASIC_AUTH_CACHE_SECONDS = env_int("PARSEQ_BASIC_AUTH_CACHE_SECONDS", 60, minimum=0)

# The REST API (README: API).
REST_FRAMEWORK = {
    # Basic first: an anonymous request gets 401 with `WWW-Authenticate: Basic` (a browser: `Token`), not a bare 403.
    # Parseq's Basic checks the sign-in lockout and remembers successes for a while (README: Sign-ins).
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "parseq.access.authentication.BasicAuthentication",
        "rest_framework.authentication.SessionAuthentication",
        "rest_framework.authentication.TokenAuthentication",
    ],
    # The admin's model permissions, action by action (README: Permissions); `is_staff` alone grants nothing here.
    "DEFAULT_PERMISSION_CLASSES": ["parseq.api.permissions.ActionPermissions"],
    "DEFAULT_PARSER_CLASSES": [
        "parseq.api.parsers.DepthSafeJSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_PAGINATION_CLASS": "parseq.api.pagination.Pages",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "parseq.api.exceptions.handle",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Parseq API",
    "DESCRIPTION": "Parsers, runs, their files, and starting runs. Each operation needs the Django permission "
    "the admin would ask for (view, add, change or delete parsers and runs, `core.run_parser`, `core.cancel_run`); "
    "a 403 names it. Authenticate with HTTP Basic, a session, or "
    "`Authorization: Token <key>` (tokens: the admin, or `manage.py drf_create_token <user>`).",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "parseq.api.schema.add_error_responses",
        "parseq.api.schema.add_links",
        "parseq.api.schema.optional_bodies_of_two_types",
    ],
}
# A result link /<run_id>/<filename> is an unguessable capability; false makes it need a signed-in user.
PUBLIC_DOWNLOADS = env_bool("PARSEQ_PUBLIC_DOWNLOADS", True)

# The scheduler (README: Scheduling).
# Due times missed while no scheduler ran: within this many seconds they run once, older ones are skipped.
MISFIRE_GRACE = env_int("PARSEQ_MISFIRE_GRACE", 3600, minimum=1)
# How often a standby scheduler tries to take over, and how often the active one rereads every schedule.
SCHEDULER_STANDBY_POLL = env_int("PARSEQ_SCHEDULER_STANDBY_POLL", 1, minimum=1)
SCHEDULER_RECONCILE = env_int("PARSEQ_SCHEDULER_RECONCILE", 60, minimum=1)
APSCHEDULER_DATETIME_FORMAT = "Y-m-d H:i:s"

# Alerts (README: Alerts): a run's webhook is posted by the workers, retried with doubling delays.
WEBHOOK_TIMEOUT = env_int("PARSEQ_WEBHOOK_TIMEOUT", 10, minimum=1)
WEBHOOK_ATTEMPTS = env_int("PARSEQ_WEBHOOK_ATTEMPTS", 5, minimum=1)
WEBHOOK_BACKOFF = env_int("PARSEQ_WEBHOOK_BACKOFF", 10, minimum=1)
# Webhooks go only to the public internet (runner/addresses.py); these networks are let through all the same.
WEBHOOK_ALLOWED_NETWORKS = env_networks("PARSEQ_WEBHOOK_ALLOWED_NETWORKS")
# Refused to webhooks and to scripts' egress whatever the address policy says, allow-list included: addresses
# of this host that its workers cannot see, as a container's host's public address or a cloud's 1:1 NAT address.
REFUSED_NETWORKS = env_networks("PARSEQ_REFUSED_NETWORKS")

# Logs go to stdout, one JSON object a line by default (plain text under `make run`); a line
# logged while a worker runs a parser carries the run's id.
LOG_FORMAT = env_choice("PARSEQ_LOG_FORMAT", "plain" if DEBUG else "json", ["json", "plain"])
LOG_LEVEL = env_choice("LOG_LEVEL", "INFO", ["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"])
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {
        "run_id": {"()": "parseq.logs.RunIdFilter"},
        "repeated_broker_errors": {"()": "parseq.logs.RepeatedBrokerErrorsFilter"},
    },
    "formatters": {"json": {"()": "parseq.logs.JsonFormatter"}, "plain": {"()": "parseq.logs.PlainFormatter"}},
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "stream": "ext://sys.stdout",
            "formatter": LOG_FORMAT,
            "filters": ["run_id", "repeated_broker_errors"],
            # On the handler too: loggers with levels of their own (django.request) would pass it otherwise.
            "level": LOG_LEVEL,
        }
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    # Broker failures are reported by Parseq itself (healthz, the run's error); pika's own traces are noise.
    "loggers": {"pika": {"level": "CRITICAL"}},
}
