"""All settings in one place, read from the environment (prefix ``DUST_``) and a ``.env`` file."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """DUST's settings. Every field maps to an environment variable ``DUST_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="DUST_", env_file=".env", extra="ignore")

    database_url: str = Field(
        "sqlite:///./dust.db",
        description="SQLAlchemy URL; PostgreSQL as postgresql+psycopg://user@host/db.",
    )
    redis_url: str | None = Field(None, description="Optional Redis for the shared cache and job queue.")
    secret_key: str | None = Field(None, description="Key that signs tokens; required off the embedded demo.")
    log_level: str = Field("INFO", description="DEBUG, INFO, WARNING or ERROR.")
    log_format: Literal["json", "console"] = Field("console", description="One line per event: json or console.")
    max_batch_values: int = Field(100_000, description="Largest number of values one write request may carry.")
    max_request_bytes: int = Field(32 * 1024 * 1024, description="Largest request body accepted, in bytes.")
    max_read_cells: int = Field(5_000_000, description="Largest number of cells one tensor read may return.")
    page_size_max: int = Field(500, description="Largest page a list route returns.")
    idempotency_ttl_hours: int = Field(24, description="How long an Idempotency-Key is remembered.")
