"""Blobs (selfies, masks, result images) and result records in Redis, each with a TTL and an owner index.

The owner index (`likeness:user:<id>:keys`) lets `forget` delete everything of one user without a scan.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Literal

from redis.asyncio import Redis

from likeness.errors import InvalidImage, ResultExpired
from likeness.queue import _keys
from likeness.queue._models import ResultRecord

__all__ = ["BlobStore"]

BlobKind = Literal["selfie", "mask", "image"]


class BlobStore:
    """Bytes and records under `likeness:blob:*` / `likeness:result:*`, expiring after the configured TTLs."""

    def __init__(self, redis: Redis, *, selfie_ttl_s: int, result_ttl_s: int, max_bytes: int) -> None:
        self.redis = redis
        self.selfie_ttl_s = selfie_ttl_s
        self.result_ttl_s = result_ttl_s
        self.max_bytes = max_bytes

    def ttl_for(self, kind: BlobKind) -> int:
        return self.selfie_ttl_s if kind in ("selfie", "mask") else self.result_ttl_s

    async def put(self, data: bytes, *, kind: BlobKind, owner: str, blob_id: str | None = None) -> str:
        """Store `data` (an upload is limited to `max_upload_bytes`); returns the blob id."""
        if kind != "image" and len(data) > self.max_bytes:
            raise InvalidImage(message=f"That file is too large; the limit is {self.max_bytes / 1e6:.0f} MB.")
        blob_id = blob_id or f"{kind[0]}-{uuid.uuid4().hex}"
        ttl = self.ttl_for(kind)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(_keys.blob(blob_id), data, ex=ttl)
            self.own(pipe, owner, _keys.blob(blob_id))
            await pipe.execute()
        return blob_id

    async def get(self, blob_id: str) -> bytes:
        """The blob's bytes, or `ResultExpired` when it is gone (TTL, `forget`)."""
        data = await self.redis.get(_keys.blob(blob_id))
        if data is None:
            raise ResultExpired()
        return bytes(data)

    async def put_result(self, record: ResultRecord, images: Mapping[str, bytes] | None = None) -> None:
        """Store a result record, with its images (blob id -> bytes) in the same transaction."""
        async with self.redis.pipeline(transaction=True) as pipe:
            for blob_id, data in (images or {}).items():
                pipe.set(_keys.blob(blob_id), data, ex=self.result_ttl_s)
                self.own(pipe, record.owner_user_id, _keys.blob(blob_id))
            pipe.set(_keys.result(record.result_id), record.model_dump_json(), ex=self.result_ttl_s)
            self.own(pipe, record.owner_user_id, _keys.result(record.result_id))
            await pipe.execute()

    async def get_result(self, result_id: str) -> ResultRecord:
        raw = await self.redis.get(_keys.result(result_id))
        if raw is None:
            raise ResultExpired()
        return ResultRecord.model_validate_json(raw)

    def own(self, pipe: object, owner: str, key: str) -> None:
        """Add `key` to the owner's index inside a caller's pipeline."""
        index = _keys.user_keys(owner)
        pipe.sadd(index, key)  # type: ignore[attr-defined]
        pipe.expire(index, max(self.selfie_ttl_s, self.result_ttl_s))  # type: ignore[attr-defined]
