"""Admission control for new jobs: per-user and global limits, fair ordering, job-time estimates.

Limits (admins in `settings.admins` bypass them all): at most `max_active_jobs_per_user` unfinished jobs
(`TooManyActiveJobs`), `rate_limit` requests per user (the `limits` library's moving window in Redis,
`RateLimited(retry_after)`), at most `queue_cap` jobs in the queue (`QueueFull(retry_after)`).

Fair ordering (no dispatcher process): arq runs the queued job with the lowest score first. Each user has
a virtual clock `likeness:fair:<user>`; a new job gets the score `max(now, clock)` and moves the clock by
the average job duration. A user with 10 queued jobs therefore has scores now, now+d, ..., now+9d, and
another user's job submitted at `now + ε` is ordered after the first of them only: it waits for at most
the jobs already taken by workers (at most `max_batch` per worker, i.e. one engine call each) plus about
one job of each other busy user. Scores are shifted `FAIR_OFFSET_MS` into the past so arq never treats
them as deferred (no idle worker waits for a score to come due); a user's clock runs at most half of that
ahead of now. A retried job (`arq.Retry`) is re-scored by arq to now + backoff, i.e. behind the queue.
"""

from __future__ import annotations

import math
import time

from limits import parse as parse_rate
from limits.aio.storage import RedisStorage
from limits.aio.strategies import MovingWindowRateLimiter
from redis.asyncio import ConnectionPool, Redis

from likeness.config import Settings
from likeness.errors import QueueFull, RateLimited, TooManyActiveJobs
from likeness.queue import _keys

__all__ = ["DEFAULT_JOB_S", "FAIR_OFFSET_MS", "Admission"]

FAIR_OFFSET_MS = 3600 * 1000
DEFAULT_JOB_S = 20.0

# KEYS: the user's fair clock, recent job durations. ARGV: now ms, default job duration ms, offset ms (also the
# TTL). Returns {start tag, average job duration in ms}: one round trip for the score and the ETA.
_FAIR_TAG = """
local durations = redis.call('lrange', KEYS[2], 0, -1)
local avg = tonumber(ARGV[2])
if #durations > 0 then
  local sum = 0
  for _, d in ipairs(durations) do sum = sum + tonumber(d) end
  avg = math.floor(sum / #durations * 1000)
end
local now = tonumber(ARGV[1])
local clock = math.min(tonumber(redis.call('get', KEYS[1]) or '0'), now + math.floor(tonumber(ARGV[3]) / 2))
local start = math.max(now, clock)
redis.call('set', KEYS[1], start + avg, 'PX', ARGV[3])
return {start, avg}
"""


class Admission:
    """Limits and fair scores for one client, on the client's Redis pool."""

    def __init__(self, settings: Settings, redis: Redis, pool: ConnectionPool) -> None:
        self.settings = settings
        self.redis = redis
        self._rate = parse_rate(settings.rate_limit)
        self._limiter = MovingWindowRateLimiter(
            RedisStorage(
                "async+" + settings.redis_dsn,
                implementation="redispy",
                key_prefix=_keys.LIMITS_PREFIX,
                connection_pool=pool,  # type: ignore[arg-type]  # shared: one pool, one retry policy
            )
        )

    def is_admin(self, user_id: str) -> bool:
        return str(user_id) in self.settings.admins

    async def check(self, user_id: str) -> None:
        """Raise the first limit `user_id` hits (a rate-limit hit is counted even if a later check fails)."""
        if self.is_admin(user_id):
            return
        active_key = _keys.active(user_id)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zremrangebyscore(active_key, "-inf", int(time.time() * 1000))
            pipe.zcard(active_key)
            pipe.zcard(_keys.ARQ_QUEUE)
            _, active, depth = await pipe.execute()
        if active >= self.settings.max_active_jobs_per_user:
            raise TooManyActiveJobs(active=active, limit=self.settings.max_active_jobs_per_user)
        if not await self._limiter.hit(self._rate, "user", user_id):
            window = await self._limiter.get_window_stats(self._rate, "user", user_id)
            raise RateLimited(retry_after=max(1, math.ceil(window.reset_time - time.time())))
        if depth >= self.settings.queue_cap:
            raise QueueFull(retry_after=max(5, math.ceil(await self.avg_job_s() * 2)))

    async def fair_score_ms(self, user_id: str) -> tuple[int, float]:
        """The arq score (unix ms, in the past) that puts a new job of `user_id` in its fair place, and the
        average job duration (s) it was moved by."""
        now_ms = int(time.time() * 1000)
        tag, avg_ms = await self.redis.eval(  # type: ignore[misc]
            _FAIR_TAG,
            2,
            _keys.fair(user_id),
            _keys.DURATIONS,
            str(now_ms),
            str(int(DEFAULT_JOB_S * 1000)),
            str(FAIR_OFFSET_MS),
        )
        return int(tag) - FAIR_OFFSET_MS, int(avg_ms) / 1000

    def active_bound_ms(self) -> int:
        """How long an unfinished job may count against its user: every try timing out, plus queueing."""
        return (self.settings.job_timeout_s + 15) * 3 * 1000 + 3600 * 1000

    async def avg_job_s(self) -> float:
        """Moving average of the last job durations the workers recorded (a default before any)."""
        values = [float(v) for v in await self.redis.lrange(_keys.DURATIONS, 0, -1)]  # type: ignore[misc]
        return sum(values) / len(values) if values else DEFAULT_JOB_S
