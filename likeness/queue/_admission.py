"""Admission control for new jobs: per-user and global limits, fair ordering, job-time estimates.

Limits (admins in `settings.admins` bypass them all): at most `max_active_jobs_per_user` unfinished jobs
(`TooManyActiveJobs`), at most `queue_cap` unfinished jobs in all (`QueueFull(retry_after)`), and `rate_limit`
requests per user (the `limits` library's moving window in Redis, `RateLimited(retry_after)`).

Check and reserve are ONE step (`_RESERVE`, a Lua script): a slot is taken in the user's and the global set
of unfinished jobs, with the idempotency key, or nothing is. Eight photos sent at once by one user (limit 3)
get exactly three jobs. The slot is released when the job ends, fails, is cancelled, or its enqueue fails
(`release`); a slot whose job vanished without any of these (a crash at the worst moment) expires by itself
after `active_bound_ms`.

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
from dataclasses import dataclass

from limits import parse as parse_rate
from limits.aio.storage import RedisStorage
from limits.aio.strategies import MovingWindowRateLimiter
from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import ResponseError

from likeness.config import Settings
from likeness.errors import QueueFull, RateLimited, TooManyActiveJobs
from likeness.queue import _keys

__all__ = ["DEFAULT_JOB_S", "Admission", "Reservation"]

FAIR_OFFSET_MS = 3600 * 1000
DEFAULT_JOB_S = 20.0
# New work is refused once Redis uses this share of its `maxmemory` (it never evicts): what is queued can
# still store its results and deliver. Read from INFO at most once a second per client.
MEMORY_HIGH_WATER = 0.9
_MEMORY_CHECK_S = 1.0

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


# KEYS: the user's unfinished jobs, all unfinished jobs, the idempotency key (or "" without one).
# ARGV: now ms, expiry ms, job id, per-user limit, global cap, "1" to bypass the limits, idempotency TTL s.
# Returns {"dup", first job id} | {"user", active count} | {"cap", unfinished count} | {"ok", job id}.
_RESERVE = """
if KEYS[3] ~= '' then
  local first = redis.call('get', KEYS[3])
  if first then return {'dup', first} end
end
local now = tonumber(ARGV[1])
redis.call('zremrangebyscore', KEYS[1], '-inf', now)
redis.call('zremrangebyscore', KEYS[2], '-inf', now)
if ARGV[6] ~= '1' then
  local active = redis.call('zcard', KEYS[1])
  if active >= tonumber(ARGV[4]) then return {'user', tostring(active)} end
  local unfinished = redis.call('zcard', KEYS[2])
  if unfinished >= tonumber(ARGV[5]) then return {'cap', tostring(unfinished)} end
end
local ttl_ms = tonumber(ARGV[2]) - now
redis.call('zadd', KEYS[1], ARGV[2], ARGV[3])
redis.call('pexpire', KEYS[1], ttl_ms)
redis.call('zadd', KEYS[2], ARGV[2], ARGV[3])
redis.call('pexpire', KEYS[2], ttl_ms)
if KEYS[3] ~= '' then redis.call('set', KEYS[3], ARGV[3], 'EX', ARGV[7]) end
return {'ok', ARGV[3]}
"""


@dataclass(frozen=True, slots=True)
class Reservation:
    """A slot taken for a new job (`duplicate_of` is None), or the job already queued under the same key."""

    job_id: str
    duplicate_of: str | None = None


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
        self._memory_full = False
        self._memory_checked_at = -math.inf

    def is_admin(self, user_id: str) -> bool:
        return str(user_id) in self.settings.admins

    async def reserve(self, user_id: str, job_id: str, idempotency_key: str | None = None) -> Reservation:
        """Check every limit and take a slot for `job_id` in one atomic step; raise the first limit hit.

        `idempotency_key` (the `_keys.idem` key of the request) is claimed in the same step: when it is taken
        already, nothing is reserved and the first job's id comes back in `duplicate_of`.
        """
        await self._check_memory()
        now_ms = int(time.time() * 1000)
        bypass = self.is_admin(user_id)
        kind, value = await self.redis.eval(  # type: ignore[misc]
            _RESERVE,
            3,
            _keys.active(user_id),
            _keys.RESERVED,
            idempotency_key or "",
            str(now_ms),
            str(now_ms + self.active_bound_ms()),
            job_id,
            str(self.settings.max_active_jobs_per_user),
            str(self.settings.queue_cap),
            "1" if bypass else "0",
            str(self.settings.result_ttl_s),
        )
        kind, value = _text(kind), _text(value)
        if kind == "dup":
            return Reservation(job_id=value, duplicate_of=value)
        if kind == "user":
            raise TooManyActiveJobs(active=int(value), limit=self.settings.max_active_jobs_per_user)
        if kind == "cap":
            raise QueueFull(retry_after=max(5, math.ceil(await self.avg_job_s() * 2)))
        if not bypass and not await self._limiter.hit(self._rate, "user", user_id):
            await self.release(user_id, job_id, idempotency_key)
            window = await self._limiter.get_window_stats(self._rate, "user", user_id)
            raise RateLimited(retry_after=max(1, math.ceil(window.reset_time - time.time())))
        return Reservation(job_id=job_id)

    async def release(self, user_id: str, job_id: str, idempotency_key: str | None = None) -> None:
        """Give a job's slot back (it ended, or never got queued; then also its idempotency key)."""
        async with self.redis.pipeline(transaction=True) as pipe:
            self.release_in(pipe, user_id, job_id)
            if idempotency_key:
                pipe.delete(idempotency_key)
            await pipe.execute()

    @staticmethod
    def release_in(pipe: Pipeline, user_id: str, job_id: str) -> None:
        """`release` on a caller's pipeline (without the idempotency key)."""
        pipe.zrem(_keys.active(user_id), job_id)
        pipe.zrem(_keys.RESERVED, job_id)

    async def _check_memory(self) -> None:
        """`QueueFull` while Redis is near its `maxmemory` (nothing is evicted there: new work must wait)."""
        now = time.monotonic()
        if now - self._memory_checked_at >= _MEMORY_CHECK_S:
            self._memory_checked_at = now
            try:
                info = await self.redis.info("memory")
            except ResponseError:  # INFO renamed or disabled (some managed Redis): no reading, no refusal
                info = {}
            limit = int(info.get("maxmemory", 0) or 0)
            self._memory_full = limit > 0 and int(info.get("used_memory", 0)) >= limit * MEMORY_HIGH_WATER
        if self._memory_full:
            raise QueueFull(retry_after=60)

    def rate_limit_key(self, user_id: str) -> str:
        """The Redis key of `user_id`'s rate-limit window (deleted by `forget`)."""
        return f"{_keys.LIMITS_PREFIX}:{self._rate.key_for('user', user_id)}"

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


def _text(value: bytes | str | int) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
