"""Payloads that cross Redis between bots and workers: small, validated, JSON-serialisable pydantic models.

A job carries the request exactly as the bot validated it (`likeness.requests.PortraitSpec` / `EditSpec`);
images never travel inside a payload: they are blobs in Redis referenced by id (see `_blobs.py`).
"""

from __future__ import annotations

import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from likeness.queue import _keys
from likeness.requests import MAX_COUNT, EditSpec, PortraitSpec

__all__ = [
    "Delivery",
    "JobKind",
    "JobPayload",
    "Origin",
    "Platform",
    "ProgressEvent",
    "QueueStats",
    "ResultMeta",
    "ResultRecord",
    "Stage",
    "Ticket",
]

Platform = Literal["telegram", "discord", "playground"]
JobKind = Literal["portrait", "reroll", "edit", "variations"]
Stage = Literal["queued", "started", "step", "done", "failed", "cancelled"]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Origin(_Model):
    """Where a request came from and where its answer goes.

    `extra` holds small platform data (e.g. a Discord interaction token and application id); it is
    stored with the job and never logged.
    """

    platform: Platform
    chat_id: str = Field(min_length=1, max_length=128)
    user_id: str = Field(min_length=1, max_length=128)
    message_id: str | None = Field(default=None, max_length=128, description="The request message (to reply to)")
    thread_id: str | None = Field(default=None, max_length=128, description="Telegram topic / Discord thread")
    progress_message_id: str | None = Field(default=None, max_length=128, description="Message edited with progress")
    age_restricted: bool = Field(default=False, description="Channel flag (Discord NSFW channel, Telegram 18+ group)")
    extra: dict[str, str] = Field(default_factory=dict)

    @field_validator("extra")
    @classmethod
    def _small_extra(cls, value: dict[str, str]) -> dict[str, str]:
        if len(value) > 16 or sum(len(k) + len(v) for k, v in value.items()) > 4096:
            raise ValueError("origin.extra is limited to 16 entries and 4 KiB")
        return value


class JobPayload(_Model):
    """One job as stored in Redis and handed to the worker.

    `mode` is what the engine runs: a portrait from a selfie, an edit of `source_blob_id`, or a variation
    of `source_blob_id` (with the portrait params that made it). `kind` is what the user asked for; a
    reroll repeats the parent's request (its mode included) with new seeds.
    Seeds and the (random) result id are fixed at submit time, so a job re-run after a crash makes the same
    images under the same ids. `subject_user_id` is whose face it is (the selfie's owner), which differs from
    the requester's when a member remixes another's result: `forget` by either removes it.
    """

    job_id: str = Field(min_length=1, max_length=128)
    result_id: str = Field(default_factory=_keys.new_result_id, min_length=1, max_length=128)
    subject_user_id: str | None = Field(default=None, max_length=128)
    kind: JobKind
    mode: Literal["portrait", "edit", "variation"]
    origin: Origin
    portrait: PortraitSpec | None = None
    edit: EditSpec | None = None
    selfie_blob_id: str | None = Field(default=None, max_length=128)
    source_blob_id: str | None = Field(
        default=None, max_length=128, description="Edits and variations: the image being edited or varied"
    )
    parent_result_id: str | None = Field(default=None, max_length=128)
    seeds: tuple[int, ...] = Field(min_length=1, max_length=MAX_COUNT)
    submitted_at: float = Field(default_factory=time.time)

    @property
    def user_id(self) -> str:
        return self.origin.user_id

    @property
    def subject(self) -> str:
        """The user whose selfie this job draws (the requester, unless remixing someone else's result)."""
        return self.subject_user_id or self.origin.user_id

    @property
    def owners(self) -> tuple[str, ...]:
        """Users whose `forget` must remove what this job writes: the requester and the person in the selfie."""
        return tuple(dict.fromkeys((self.user_id, self.subject)))


class ResultMeta(_Model):
    """What the bots show about a result (caption, notices, the NSFW decision), typed; the engine's own record
    of how it was made (prompts, size, steps, identity, LoRAs, best-of) is kept in `details`."""

    model: str
    preset: str = Field(description="The canonical preset spec it was made with")
    preset_title: str = Field(description="The preset's title, shown in the caption")
    instruction: str | None = Field(default=None, description="An edit's instruction, as the user wrote it")
    likeness_scores: tuple[float | None, ...] = Field(default=(), description="Per image: % or None (no face)")
    nsfw_scores: tuple[float, ...] = Field(default=(), description="Per image: the output guard's probability")
    notices: tuple[str, ...] = Field(default=(), description="Things to tell the user (e.g. several faces)")
    batch_size: int = Field(default=1, ge=1)
    worker: str = ""
    details: dict[str, Any] = Field(default_factory=dict)


class ResultRecord(_Model):
    """A finished generation, kept `result_ttl_s`: enough to reroll or edit it later from any process."""

    result_id: str = Field(min_length=1, max_length=128)
    parent_id: str | None = None
    job_id: str = Field(min_length=1, max_length=128)
    kind: JobKind
    request: JobPayload = Field(description="The job that made it: the request spec, selfie, source image, seeds")
    seeds: tuple[int, ...] = Field(description="Per image, the seed that made it (a best-of winner's, if any)")
    image_blob_ids: tuple[str, ...]
    metadata: ResultMeta
    owner_user_id: str
    origin: Origin
    created_at: float = Field(default_factory=time.time)


class Ticket(_Model):
    """Answer to a submit: the job id, its place in the queue (1 = next) and an estimated wait."""

    job_id: str
    position: int
    eta_s: float
    duplicate: bool = Field(default=False, description="The same idempotency key was submitted before; no new job")


class ProgressEvent(_Model):
    """One step of a job's life, in order; a job's events end with done, failed or cancelled."""

    job_id: str
    stage: Stage
    step: int = 0
    total: int = 0
    position: int | None = None
    eta_s: float | None = None
    preview_blob_id: str | None = None
    at: float = Field(default_factory=time.time)

    @property
    def final(self) -> bool:
        return self.stage in ("done", "failed", "cancelled")


class Delivery(_Model):
    """What a bot must send for a finished job: a result, or an error code with a text fit for the user.

    `delivery_id` is the Redis stream entry id (empty until read from the stream); pass the delivery back
    to `DeliveryConsumer.ack` once the chat message is sent.
    """

    delivery_id: str = ""
    job_id: str
    kind: JobKind
    origin: Origin
    result: ResultRecord | None = None
    error_code: str | None = None
    user_message: str | None = None

    @property
    def ok(self) -> bool:
        return self.result is not None


class QueueStats(_Model):
    """Numbers for /stats and the metrics endpoint."""

    queued: int
    running: int
    jobs_today: int
    failures_today: dict[str, int]
    avg_job_s: float
    deliveries_pending: dict[str, int]
