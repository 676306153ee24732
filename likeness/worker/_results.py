"""From an engine's images to a stored result: the NSFW output guard, the AI-generated marker, the result
record with its typed metadata (`ResultMeta`), and images + record in one transaction."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

from likeness.config import Settings
from likeness.errors import UserError
from likeness.generation import GenerationResult, finish_images
from likeness.images import load_image
from likeness.presets import PresetCatalog
from likeness.queue import AbuseLog, BlobStore, JobPayload, ResultMeta, ResultRecord, keys

__all__ = ["ResultWriter"]

# What the bots read of an engine's record; the rest is kept as the result's `details`.
_SHOWN = ("model", "preset", "instruction", "likeness_scores", "notices")


class ResultWriter:
    """Classifies, marks and stores what a job made."""

    def __init__(
        self, settings: Settings, blobs: BlobStore, abuse: AbuseLog, guard: Any, presets: PresetCatalog
    ) -> None:
        self.settings = settings
        self.blobs = blobs
        self.abuse = abuse
        self.guard = guard
        self.presets = presets

    async def store(self, payload: JobPayload, result: GenerationResult, batch_size: int) -> ResultRecord:
        """The result of `payload` (made in a batch of `batch_size`), stored."""
        # An edit keeps the unmasked pixels of its (already marked) source byte-identical: mark only the rest.
        source = None
        if payload.mode == "edit" and payload.source_blob_id is not None:
            source = await self.blobs.get(payload.source_blob_id)
        scores, pngs = await asyncio.to_thread(self._classify_and_mark, result, source)
        for score in scores:
            if score >= self.settings.nsfw_threshold:
                origin = payload.origin
                detail = f"nsfw={score:.2f}"
                await self.abuse.record("flag", origin.user_id, origin.platform, origin.chat_id, payload.job_id, detail)
        images = dict(zip(keys.image_ids(payload.result_id, len(pngs)), pngs, strict=True))
        record = ResultRecord(
            result_id=payload.result_id,
            parent_id=payload.parent_result_id,
            job_id=payload.job_id,
            kind=payload.kind,
            request=payload,
            seeds=tuple(result.seeds),
            image_blob_ids=tuple(images),
            metadata=self._metadata(payload, result, scores, batch_size),
            owner_user_id=payload.user_id,
            origin=payload.origin,
        )
        await self.blobs.put_result(record, images)
        return record

    def _metadata(
        self, payload: JobPayload, result: GenerationResult, scores: list[float], batch_size: int
    ) -> ResultMeta:
        record = result.metadata
        preset = str(record.get("preset", ""))
        instruction = payload.edit.instruction.text if payload.edit is not None else record.get("instruction")
        return ResultMeta(
            model=str(record.get("model", "")),
            preset=preset,
            preset_title=self._title(preset),
            instruction=instruction,
            likeness_scores=tuple(record.get("likeness_scores") or [None] * len(result.images)),
            nsfw_scores=tuple(round(float(score), 4) for score in scores),
            notices=tuple(str(n) for n in record.get("notices") or ()),
            batch_size=batch_size,
            worker=socket.gethostname(),
            details={k: v for k, v in record.items() if k not in _SHOWN and k != "seeds"},
        )

    def _title(self, spec: str) -> str:
        """The preset's title for the caption (the spec itself if the operator removed the preset meanwhile)."""
        try:
            return self.presets.resolve(spec).title
        except UserError:
            return spec

    def _classify_and_mark(self, result: GenerationResult, source: bytes | None) -> tuple[list[float], list[bytes]]:
        """Off the event loop, in one thread hop: NSFW scores and the marked PNGs of `result`'s images."""
        limits = {"max_bytes": self.settings.max_upload_bytes, "max_pixels": self.settings.max_image_pixels}
        marked_source = None if source is None else load_image(source, **limits)
        return finish_images(
            result.images, result.metadata, guard=self.guard, watermark=self.settings.watermark,
            marked_source=marked_source,
        )  # fmt: skip
