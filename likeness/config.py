"""One `Settings` object, read from `LIKENESS_*` environment variables (and an optional `.env`).

Built once per entrypoint and passed down; nothing else in the package reads `os.environ`.
Tokens are `SecretStr`: they never appear in reprs, logs or error messages.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

__all__ = ["DEFAULT_REDIS_URL", "Settings", "describe_invalid"]

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"

IdList = Annotated[list[str], NoDecode]


def _default_data_dir() -> Path:
    return Path.home() / ".local" / "share" / "likeness"


class Settings(BaseSettings):
    """Every knob of Likeness. Env names are the field names upper-cased with the `LIKENESS_` prefix."""

    model_config = SettingsConfigDict(
        env_prefix="LIKENESS_", env_file=".env", env_file_encoding="utf-8", extra="ignore", frozen=True
    )

    # --- core -------------------------------------------------------------------------------------
    redis_url: str | None = Field(None, description="Redis DSN; unset: `likeness up` runs a private one")
    model: str = Field("sdxl-realvis", description="Model key from the registry, or `tiny` for tests")
    models_file: Path | None = Field(None, description="Optional TOML file with extra model specs")
    device: Literal["auto", "cuda", "mps", "cpu"] = "auto"
    dtype: Literal["auto", "float16", "bfloat16", "float32"] = "auto"
    data_dir: Path = Field(default_factory=_default_data_dir, description="Caches, private Redis data")
    presets_dir: Path | None = Field(None, description="Folder of operator preset TOML files")
    log_format: Literal["text", "json"] = "text"
    log_level: str = "INFO"

    # --- chat platforms ---------------------------------------------------------------------------
    telegram_token: SecretStr | None = None
    telegram_api_url: str = "https://api.telegram.org"
    telegram_webhook_url: str | None = Field(None, description="Public HTTPS URL; unset = long polling")
    telegram_webhook_listen: str = "127.0.0.1"
    telegram_webhook_port: int = 8443
    discord_token: SecretStr | None = None
    discord_api_url: str = "https://discord.com/api/v10"
    discord_threads: bool = Field(False, description="Open a thread under each new Discord portrait for its edits")

    # --- access -----------------------------------------------------------------------------------
    allowed_chats: IdList = Field(default_factory=list, description="Telegram chat ids / Discord guild ids")
    allowed_users: IdList = Field(default_factory=list, description="User ids allowed anywhere")
    admins: IdList = Field(default_factory=list, description="User ids that bypass limits, may use /stats")
    collaborate: bool = Field(False, description="Default: anyone may reroll/edit anyone's results")

    # --- input limits -----------------------------------------------------------------------------
    max_upload_bytes: int = Field(20 * 1024 * 1024, gt=0, description="Largest upload read (20 MiB)")
    max_image_pixels: int = 40_000_000
    max_prompt_chars: int = 400
    max_selfie_side: int = Field(2048, ge=256, le=8192, description="Selfies are stored downscaled to this (px)")
    upload_budget_bytes: int = Field(
        64 * 1024 * 1024, gt=0, description="Per user: bytes of uploads kept at once (within the selfie TTL)"
    )

    # --- queue and storage ------------------------------------------------------------------------
    selfie_ttl_s: int = 24 * 3600
    result_ttl_s: int = 7 * 24 * 3600
    max_active_jobs_per_user: int = 3
    rate_limit: str = Field("20/minute", description="Per-user request rate (`limits` notation)")
    queue_cap: int = Field(200, description="Queued jobs beyond which requests get 'busy'")
    job_timeout_s: int = 300
    poll_delay_s: float = Field(0.5, gt=0, description="Idle workers' safety-net poll; new jobs wake them at once")
    batch_window_ms: int = 30
    max_batch: int = 4
    metrics_port: int | None = None
    redis_timeout_s: float = Field(3.0, gt=0, description="A Redis command unanswered this long fails")

    # --- identity ---------------------------------------------------------------------------------
    face_backend: Literal["dlib", "insightface"] = "dlib"
    best_of: int = Field(1, ge=1, le=8, description="Candidates generated per returned image")
    likeness_threshold: float = Field(50.0, ge=0, le=100, description="Best-of-N retry threshold (%)")

    # --- safety -----------------------------------------------------------------------------------
    nsfw_backend: Literal["transformers", "nudenet", "off"] = "transformers"
    nsfw_model: str = "Falconsai/nsfw_image_detection"
    blocklist_file: Path | None = None
    allow_nsfw_age_restricted: bool = False
    watermark: bool = True
    abuse_retention_days: int = 30
    nsfw_threshold: float = Field(0.5, ge=0, le=1, description="NSFW probability at which an image is flagged")

    # --- playground -------------------------------------------------------------------------------
    playground_host: str = "127.0.0.1"
    playground_port: int = 8080
    playground_allowed_hosts: IdList = Field(
        default_factory=list, description="Extra Host names the playground answers (loopback always)"
    )

    @field_validator("allowed_chats", "allowed_users", "admins", "playground_allowed_hosts", mode="before")
    @classmethod
    def _split_ids(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        if isinstance(value, (int, float)):
            return [str(int(value))]
        return value

    @property
    def redis_dsn(self) -> str:
        """The Redis URL to use when none is configured explicitly."""
        return self.redis_url or DEFAULT_REDIS_URL


def describe_invalid(exc: ValidationError) -> str:
    """The rejected settings by their environment variables, without the rejected values (one may be a secret)."""
    return "; ".join(
        f"LIKENESS_{'_'.join(str(part) for part in err['loc']).upper()}: {err['msg']}"
        for err in exc.errors(include_input=False)
    )
