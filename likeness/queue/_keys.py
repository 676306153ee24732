"""Every Redis key Likeness writes (arq's own `arq:*` keys aside). Each one is written with a TTL.

likeness:job:<job_id>                JobPayload JSON (also the idempotency marker)
likeness:blob:<blob_id>              selfie / mask / result image bytes
likeness:result:<result_id>          ResultRecord JSON
likeness:user:<user_id>:keys         set of the keys above owned by a user (for `forget`)
likeness:user:<user_id>:active       zset job_id -> expiry ms of the user's unfinished jobs
likeness:fair:<user_id>              the user's virtual clock (ms) for fair ordering
likeness:progress:<job_id>           stream of ProgressEvent JSON
likeness:deliveries:<platform>       stream of Delivery JSON, read by bots through a consumer group
likeness:delivered:<job_id>          marker: this job's Delivery was appended (exactly-once)
likeness:cancelled:<job_id>          marker: the user cancelled this job
likeness:durations                   list of recent job durations (s) for ETAs
likeness:stats:jobs:<yyyymmdd>       counter of jobs submitted that day
likeness:stats:failures:<yyyymmdd>   hash error code -> failures that day
likeness:limits:*                    the `limits` library's rate-limit windows
likeness:wake                        pub/sub channel (no key): "a job is ready", wakes idle workers at once
"""

from __future__ import annotations

import time

ARQ_QUEUE = "arq:queue"
ARQ_IN_PROGRESS = "arq:in-progress:"
ARQ_JOB = "arq:job:"
ARQ_ABORT = "arq:abort"
ARQ_FUNCTION = "run_job"

WAKE_CHANNEL = "likeness:wake"
DELIVERY_GROUP = "bots"
DURATIONS = "likeness:durations"
LIMITS_PREFIX = "likeness:limits"
DAY_S = 24 * 3600


def job(job_id: str) -> str:
    return f"likeness:job:{job_id}"


def blob(blob_id: str) -> str:
    return f"likeness:blob:{blob_id}"


def result(result_id: str) -> str:
    return f"likeness:result:{result_id}"


def user_keys(user_id: str) -> str:
    return f"likeness:user:{user_id}:keys"


def active(user_id: str) -> str:
    return f"likeness:user:{user_id}:active"


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


def today() -> str:
    return time.strftime("%Y%m%d", time.gmtime())


def stats_jobs(day: str) -> str:
    return f"likeness:stats:jobs:{day}"


def stats_failures(day: str) -> str:
    return f"likeness:stats:failures:{day}"


def result_id_for(job_id: str) -> str:
    """Result ids derive from job ids, so a job re-run after a crash overwrites instead of duplicating."""
    return f"r-{job_id}"


def image_id_for(job_id: str, index: int) -> str:
    return f"img-{job_id}-{index}"
