"""Every Redis key Likeness writes (arq's own `arq:*` keys aside), in one registry, and the ids in them.

`KEYS` lists each key's pattern, what it holds, whether it expires, and whether it can hold a user's data (then
`forget` must reach it through the user's index). `tests/test_redis_keys.py` scans Redis after full flows and
fails on any key that matches no pattern here, or that lives without a TTL where the registry says it expires.

Ids that grant access (job, result, blob ids) are random, 128 bits from `secrets` (`new_id`); nothing is
derived from public values such as chat or message ids. Idempotency maps a hash of the request's key to the
random job id (`idem`), instead of deriving the id from it.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass

from arq.constants import abort_jobs_ss, default_queue_name, in_progress_key_prefix, job_key_prefix

__all__ = [
    "ARQ_ABORT",
    "ARQ_FUNCTION",
    "ARQ_IN_PROGRESS",
    "ARQ_JOB",
    "ARQ_QUEUE",
    "AUDIT_STREAM",
    "BANS_KEY",
    "DAY_S",
    "DELIVERY_GROUP",
    "DURATIONS",
    "KEYS",
    "LIMITS_PREFIX",
    "RESERVED",
    "WAKE_CHANNEL",
    "KeySpec",
    "new_id",
]

# arq's own keys, under the names the queue client and the worker use (arq's values, not copies of them).
ARQ_QUEUE = default_queue_name  # sorted set of job ids by start time; arq keeps a job in it while it runs
ARQ_IN_PROGRESS = in_progress_key_prefix  # + job id: set while a worker runs the job
ARQ_JOB = job_key_prefix  # + job id: the pickled job definition
ARQ_ABORT = abort_jobs_ss  # sorted set of job ids to abort (`Job.abort` writes it; workers read it when polling)
ARQ_FUNCTION = "run_job"  # the one function our workers register

WAKE_CHANNEL = "likeness:wake"
DELIVERY_GROUP = "bots"
DURATIONS = "likeness:durations"
RESERVED = "likeness:reserved"
LIMITS_PREFIX = "likeness:limits"
AUDIT_STREAM = "likeness:audit"
BANS_KEY = "likeness:bans"
DAY_S = 24 * 3600


@dataclass(frozen=True, slots=True)
class KeySpec:
    """One family of keys: a glob `pattern`, what it holds, and how it is bounded."""

    pattern: str
    holds: str
    expires: bool = True
    personal: bool = False  # holds a user's id, prompt or images: `forget` reaches it through the user's index


KEYS: tuple[KeySpec, ...] = (
    KeySpec("likeness:job:*", "JobPayload JSON: origin, prompt, blob ids", personal=True),
    KeySpec(
        "likeness:idem:*", "idempotency key hash -> job id (a repeated event returns the first job)", personal=True
    ),
    KeySpec("likeness:blob:*", "selfie / mask / result image bytes", personal=True),
    KeySpec("likeness:result:*", "ResultRecord JSON", personal=True),
    KeySpec(
        "likeness:user:*:keys", "set: every key above that holds the user's data (`forget` deletes them)", personal=True
    ),
    KeySpec("likeness:user:*:entries", "set: `<stream> <entry id>` of delivery entries about the user", personal=True),
    KeySpec("likeness:user:*:active", "zset job id -> expiry ms: the user's unfinished jobs", personal=True),
    KeySpec(
        "likeness:user:*:uploads", "zset `<bytes>:<blob id>` -> expiry ms: the user's storage budget", personal=True
    ),
    KeySpec(RESERVED, "zset job id -> expiry ms: every unfinished job (the queue cap)"),
    KeySpec("likeness:fair:*", "the user's virtual clock (ms) for fair ordering", personal=True),
    KeySpec("likeness:progress:*", "stream of ProgressEvent JSON of one job", personal=True),
    KeySpec("likeness:deliveries:*", "stream of Delivery JSON per platform (entries trimmed by age)", personal=True),
    KeySpec("likeness:delivered:*", "marker: this job's Delivery was appended (exactly-once)", personal=True),
    KeySpec("likeness:cancelled:*", "marker: the job was cancelled (or its user forgotten); holds no user data"),
    KeySpec(DURATIONS, "list of recent job durations (s) for ETAs"),
    KeySpec("likeness:stats:jobs:*", "counter of jobs submitted that day"),
    KeySpec("likeness:stats:failures:*", "hash error code -> failures that day"),
    KeySpec(f"{LIMITS_PREFIX}*", "the `limits` library's rate-limit windows, per user", personal=True),
    KeySpec("likeness:msg:*", "chat message -> result id it shows", personal=True),
    KeySpec("likeness:pg:outcome:*", "playground: a job's result id or error", personal=True),
    KeySpec("likeness:pg:history:*", "playground: a session's result ids", personal=True),
    KeySpec(AUDIT_STREAM, "stream: requests, refusals, flags, bans (trimmed to the retention)", personal=True),
    KeySpec(BANS_KEY, "hash `<platform>:<user>` -> ban reason (kept by `forget`)", expires=False, personal=True),
    KeySpec("likeness:community:*", "hash: a chat's or server's settings, changed by its admins", expires=False),
    KeySpec("likeness:discord:commands:*", "hash of the slash commands last uploaded", expires=False),
)


def new_id() -> str:
    """A random id (128 bits from `secrets`, 32 hex characters) for anything whose id grants access."""
    return secrets.token_hex(16)


def job(job_id: str) -> str:
    return f"likeness:job:{job_id}"


def idem(platform: str, user_id: str, key: str) -> str:
    """Where a request's idempotency key (a message or button press id) maps to its job id."""
    digest = hashlib.sha256(f"{platform}\0{user_id}\0{key}".encode()).hexdigest()
    return f"likeness:idem:{digest}"


def blob(blob_id: str) -> str:
    return f"likeness:blob:{blob_id}"


def result(result_id: str) -> str:
    return f"likeness:result:{result_id}"


def user_keys(user_id: str) -> str:
    return f"likeness:user:{user_id}:keys"


def user_entries(user_id: str) -> str:
    return f"likeness:user:{user_id}:entries"


def active(user_id: str) -> str:
    return f"likeness:user:{user_id}:active"


def uploads(user_id: str) -> str:
    return f"likeness:user:{user_id}:uploads"


def fair(user_id: str) -> str:
    return f"likeness:fair:{user_id}"


def progress(job_id: str) -> str:
    return f"likeness:progress:{job_id}"


def deliveries(platform: str) -> str:
    return f"likeness:deliveries:{platform}"


def delivered(job_id: str) -> str:
    return f"likeness:delivered:{job_id}"


def cancelled(job_id: str) -> str:
    return f"likeness:cancelled:{job_id}"


def message_link(platform: str, chat_id: str, message_id: str) -> str:
    return f"likeness:msg:{platform}:{chat_id}:{message_id}"


def community(platform: str, chat_id: str | int) -> str:
    if not platform or ":" in platform:
        raise ValueError(f"invalid platform name {platform!r}")
    return f"likeness:community:{platform}:{chat_id}"


def playground_outcome(job_id: str) -> str:
    return f"likeness:pg:outcome:{job_id}"


def playground_history(session: str) -> str:
    return f"likeness:pg:history:{session}"


def discord_commands(application_id: object) -> str:
    return f"likeness:discord:commands:{application_id}"


def today() -> str:
    return time.strftime("%Y%m%d", time.gmtime())


def stats_jobs(day: str) -> str:
    return f"likeness:stats:jobs:{day}"


def stats_failures(day: str) -> str:
    return f"likeness:stats:failures:{day}"


def job_keys(job_id: str) -> tuple[str, ...]:
    """The keys one job writes besides its blobs and result, all owned by its user (and its subject)."""
    return (job(job_id), progress(job_id), delivered(job_id))


def new_result_id() -> str:
    return f"r-{new_id()}"


def image_ids(result_id: str, count: int) -> tuple[str, ...]:
    """Blob ids of a result's images: from its random result id, so a re-run after a crash overwrites them."""
    return tuple(f"img-{result_id.removeprefix('r-')}-{index}" for index in range(count))
