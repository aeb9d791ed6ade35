"""All settings in one place, read from the environment (prefix ``DUST_``) and a ``.env`` file."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """DUST's settings. Every field maps to an environment variable ``DUST_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="DUST_", env_file=".env", extra="ignore")

    database_url: str = Field(
        "sqlite:///./dust.db",
        description="SQLAlchemy URL; PostgreSQL as postgresql+psycopg://user@host/db.",
        repr=False,  # may hold a password
    )
    redis_url: str | None = Field(
        None,
        description="Optional Redis for the shared cache and job queue.",
        repr=False,  # may hold a password
    )
    cache_mb: int = Field(
        256,
        ge=0,
        description="Megabytes of shared-cache entries (master tensor rows, aggregates) a process keeps in its own "
        "memory, in front of Redis or without it (0: none).",
    )
    cache_ttl_seconds: int = Field(
        3600,
        ge=0,
        le=30 * 86_400,
        description="How long Redis keeps a shared-cache entry (with DUST_REDIS_URL); 0: keep none in Redis, each "
        "process caches for itself.",
    )
    cache_entry_mb: int = Field(
        64, ge=1, le=512, description="Largest shared-cache entry, in megabytes: a bigger one is computed each time."
    )
    # SecretStr: no repr, str() or traceback of the settings shows the key; read it with get_secret_value().
    secret_key: SecretStr | None = Field(None, description="Key that signs tokens; required off the embedded demo.")
    log_level: str = Field("INFO", description="DEBUG, INFO, WARNING or ERROR.")
    log_format: Literal["json", "console"] = Field("console", description="One line per event: json or console.")
    max_batch_values: int = Field(100_000, description="Largest number of values one write request may carry.")
    max_request_bytes: int = Field(32 * 1024 * 1024, description="Largest request body accepted, in bytes.")
    max_read_cells: int = Field(5_000_000, description="Largest number of cells one tensor read may return.")
    page_size_max: int = Field(500, description="Largest page a list route returns.")
    idempotency_ttl_hours: int = Field(24, description="How long an Idempotency-Key is remembered.")
    access_token_minutes: int = Field(15, ge=1, le=1440, description="Lifetime of an access token.")
    refresh_token_days: int = Field(14, ge=1, le=365, description="Lifetime of a refresh token.")
    access_relation_types: list[str] = Field(
        ["treats", "works_at", "member_of", "manages"],
        description="Relation types that grant a linked user access to the entities they lead to (JSON list).",
    )
    access_depth: int = Field(2, ge=1, le=3, description="How many such relations access may follow.")
    sensitive_fields: list[str] = Field(
        ["name", "external_id", "ssn", "address", "birth_date", "birthdate", "phone", "email"],
        description="Fields hidden from de-identified readers for kinds without a policy of their own (JSON list).",
    )
    min_cohort: int = Field(
        5,
        ge=1,
        description="De-identified readers (analysts) get an aggregate point only if at least this many entities "
        "have a value behind it; a point of fewer comes back suppressed (value null), so an aggregate narrowed to "
        "one patient does not show that patient's values.",
    )
    granting_roles: list[str] = Field(
        ["admin"],
        description="Roles that may create, change or delete relations of the access-granting types (JSON list).",
    )
    max_batch_blocks: int = Field(
        1024, ge=1, description="Most storage blocks (about 8 KiB of values each) one write request may touch."
    )
    api_key_days: int = Field(90, ge=1, le=3650, description="Lifetime of a new API key unless it asks for less.")
    api_key_max_days: int = Field(365, ge=1, le=3650, description="Longest lifetime an API key may ask for.")
    login_max_failures: int = Field(
        5, ge=1, description="Failed sign-ins of one user from one client before that client is throttled."
    )
    login_lockout_minutes: int = Field(15, ge=1, description="Longest throttle; it doubles from 1 minute up to this.")
    login_rate_per_minute: int = Field(30, ge=1, description="Failed sign-ins one client may make per minute.")
    trusted_proxies: list[str] = Field(
        [], description="Addresses whose X-Forwarded-For / -Proto headers are believed (JSON list); none by default."
    )
    cors_origins: list[str] = Field([], description="Origins allowed to call the API from a browser (JSON list).")
    request_timeout_seconds: float = Field(
        30.0,
        gt=0,
        le=3600,
        description="Time a client has to send a whole request, head and body, from its first byte (or from "
        "connecting); 408 and a closed connection beyond. Also bounds a connection that sends nothing.",
    )
    max_header_bytes: int = Field(
        64 * 1024, ge=1024, description="Largest request head (request line and headers), in bytes; 431 beyond."
    )
    max_connections: int = Field(
        1000, ge=1, description="Connections one server process holds at once; a request beyond them gets 503."
    )
    shutdown_grace_seconds: int = Field(
        30,
        gt=0,
        le=3600,
        description="On SIGTERM or Ctrl-C, how long requests in progress get to finish before the server stops "
        "(new connections are refused at once).",
    )
    webhook_allow_private: bool = Field(
        False,
        description="Allow webhooks to loopback, private, link-local and metadata addresses (tests, private "
        "deployments). Off: such a URL is refused when a rule is saved and again at delivery, after name resolution.",
    )
    webhook_max_attempts: int = Field(
        8, ge=1, le=50, description="Delivery attempts of a webhook before it is dead-lettered."
    )
    webhook_backoff_seconds: float = Field(
        2.0, gt=0, le=3600, description="Wait before the second attempt; it doubles with each attempt after."
    )
    webhook_timeout_seconds: float = Field(10.0, gt=0, le=120, description="How long one delivery attempt may take.")
    trigger_max_depth: int = Field(
        3, ge=0, le=10, description="How many times a rule's effects may fire further rules in one write (cascades)."
    )
    jobs_path: str | None = Field(
        None,
        description="The embedded job queue's SQLite file (without DUST_REDIS_URL). Default: beside a SQLite "
        "database (dust.db → dust.jobs.db); in memory for an in-memory database.",
    )
    model_cache_size: int = Field(
        8, ge=0, le=1000, description="Trained models a process keeps loaded for predictions (0: load for each)."
    )
    model_cache_mb: int = Field(
        512, ge=0, description="Most megabytes of loaded models a process keeps (each counted at its artefact's size)."
    )
