"""Blobs (selfies, masks, result images) and result records in Redis, each with a TTL and an owner index.

The owner index (`likeness:user:<id>:keys`) lets `forget` delete everything of one user without a scan; a
result is indexed under its requester AND the person whose selfie it draws, so either one's `forget` removes it.

Uploads count against a per-user storage budget (`settings.upload_budget_bytes` within the selfie TTL),
checked and recorded atomically with the write (`_PUT_UPLOAD`): a user cannot grow Redis without bound.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Literal

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from likeness.errors import ResultExpired, StorageFull
from likeness.images import format_size
from likeness.queue import _keys
from likeness.queue._models import ResultRecord

__all__ = ["BlobStore"]

UploadKind = Literal["selfie", "mask"]

# KEYS: the blob, the user's uploads zset, the user's key index. ARGV: bytes, TTL s, now ms, budget, member id,
# index TTL s. Returns -1 when stored, else the bytes in use (nothing is written then).
_PUT_UPLOAD = """
local now = tonumber(ARGV[3])
redis.call('zremrangebyscore', KEYS[2], '-inf', now)
local used = 0
for _, member in ipairs(redis.call('zrange', KEYS[2], 0, -1)) do
  used = used + tonumber(string.match(member, '^(%d+):'))
end
local size = string.len(ARGV[1])
if used + size > tonumber(ARGV[4]) then return used end
local ttl_ms = tonumber(ARGV[2]) * 1000
redis.call('set', KEYS[1], ARGV[1], 'PX', ttl_ms)
redis.call('zadd', KEYS[2], now + ttl_ms, size .. ':' .. ARGV[5])
redis.call('pexpire', KEYS[2], ttl_ms)
redis.call('sadd', KEYS[3], KEYS[1], KEYS[2])
redis.call('expire', KEYS[3], ARGV[6])
return -1
"""


class BlobStore:
    """Bytes and records under `likeness:blob:*` / `likeness:result:*`, expiring after the configured TTLs."""

    def __init__(self, redis: Redis, *, selfie_ttl_s: int, result_ttl_s: int, upload_budget_bytes: int) -> None:
        self.redis = redis
        self.selfie_ttl_s = selfie_ttl_s
        self.result_ttl_s = result_ttl_s
        self.upload_budget_bytes = upload_budget_bytes

    @property
    def index_ttl_s(self) -> int:
        return max(self.selfie_ttl_s, self.result_ttl_s)

    async def put_upload(self, data: bytes, *, kind: UploadKind, owner: str) -> str:
        """Store a prepared upload (see `likeness.images.prepare_selfie`) within the owner's budget; its blob id.

        Raises `StorageFull` when the owner's uploads still kept would exceed `upload_budget_bytes`.
        """
        blob_id = f"{kind[0]}-{_keys.new_id()}"
        used = await self.redis.eval(  # type: ignore[misc]
            _PUT_UPLOAD,
            3,
            _keys.blob(blob_id),
            _keys.uploads(owner),
            _keys.user_keys(owner),
            data,  # type: ignore[arg-type]  # redis-py takes bytes here too (its stubs say str)
            str(self.selfie_ttl_s),
            str(int(time.time() * 1000)),
            str(self.upload_budget_bytes),
            blob_id,
            str(self.index_ttl_s),
        )
        if int(used) >= 0:
            raise StorageFull(limit=format_size(self.upload_budget_bytes))
        return blob_id

    async def get(self, blob_id: str) -> bytes:
        """The blob's bytes, or `ResultExpired` when it is gone (TTL, `forget`)."""
        data = await self.redis.get(_keys.blob(blob_id))
        if data is None:
            raise ResultExpired()
        return bytes(data)

    async def put_result(self, record: ResultRecord, images: Mapping[str, bytes] | None = None) -> None:
        """Store a result record, with its images (blob id -> bytes) in the same transaction."""
        owners = record.request.owners
        async with self.redis.pipeline(transaction=True) as pipe:
            for blob_id, data in (images or {}).items():
                pipe.set(_keys.blob(blob_id), data, ex=self.result_ttl_s)
            pipe.set(_keys.result(record.result_id), record.model_dump_json(), ex=self.result_ttl_s)
            keys = [_keys.result(record.result_id), *(_keys.blob(b) for b in images or {})]
            self.own(pipe, owners, keys)
            await pipe.execute()

    async def delete_result(self, record: ResultRecord) -> None:
        """Remove a stored result and its images (a job cancelled, or its user forgotten, while it ran)."""
        await self.redis.delete(_keys.result(record.result_id), *(_keys.blob(b) for b in record.image_blob_ids))

    async def get_result(self, result_id: str) -> ResultRecord:
        raw = await self.redis.get(_keys.result(result_id))
        if raw is None:
            raise ResultExpired()
        return ResultRecord.model_validate_json(raw)

    def own(self, pipe: Pipeline, owners: Iterable[str], keys: Iterable[str]) -> None:
        """Add `keys` to each owner's index inside a caller's pipeline (`forget` deletes what is indexed)."""
        keys = list(keys)
        for owner in dict.fromkeys(owners):
            index = _keys.user_keys(owner)
            pipe.sadd(index, *keys)
            pipe.expire(index, self.index_ttl_s)
