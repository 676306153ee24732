"""From a job to an engine call: decode the stored images, resolve the preset once, build the request of the
engine seam (`likeness.generation.Engine`), and run it: portraits through the micro-batcher, edits and
variations alone on the engine thread."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable

from PIL import Image

from likeness.config import Settings
from likeness.generation import EditRequest, Engine, GenerationResult, PortraitRequest, ProgressFn, load_user_mask
from likeness.images import load_image
from likeness.queue import BlobStore, JobPayload
from likeness.worker._batcher import MicroBatcher

__all__ = ["EngineCalls"]


class EngineCalls:
    """The engine work of jobs, in the shape the engine takes (it validates nothing the bot validated)."""

    def __init__(self, settings: Settings, blobs: BlobStore, engine: Engine, batcher: MicroBatcher) -> None:
        self.settings = settings
        self.blobs = blobs
        self.engine = engine
        self.batcher = batcher

    async def portrait(
        self, payload: JobPayload, progress: ProgressFn, arrived: Callable[[], None]
    ) -> tuple[GenerationResult, int]:
        """A portrait job, batched with compatible ones; `arrived()` once its request is in the batcher."""
        spec = payload.portrait
        assert spec is not None and payload.selfie_blob_id is not None
        request = PortraitRequest(
            selfie=await self.image(payload.selfie_blob_id),
            preset=self.engine.presets.resolve(spec.preset),
            prompt=spec.prompt,
            format=spec.format,
            seeds=payload.seeds,
            best_of=1 if spec.seed is not None else None,  # a seed the user named is exactly the image made
        )
        arrived()
        return await self.batcher.submit(request, progress)

    async def rework(self, payload: JobPayload, progress: ProgressFn) -> GenerationResult:
        """An edit or a variation of an earlier image: one engine call on the engine thread."""
        assert payload.selfie_blob_id is not None and payload.source_blob_id is not None
        assert payload.parent_result_id is not None
        selfie = await self.image(payload.selfie_blob_id)
        source = await self.image(payload.source_blob_id)
        parent = await self.blobs.get_result(payload.parent_result_id)
        preset = self.engine.presets.resolve(parent.metadata.preset)
        call: Callable[[], GenerationResult]
        if payload.edit is not None:
            mask = None
            if payload.edit.mask_blob_id is not None:
                mask = await asyncio.to_thread(
                    load_user_mask,
                    await self.blobs.get(payload.edit.mask_blob_id),
                    max_bytes=self.settings.max_upload_bytes,
                    max_pixels=self.settings.max_image_pixels,
                )
            edit = EditRequest(
                source=source, selfie=selfie, instruction=payload.edit.instruction, preset=preset, mask=mask,
                seeds=payload.seeds,
            )  # fmt: skip
            call = functools.partial(self.engine.edit, edit, progress)
        else:
            prompt = payload.portrait.prompt if payload.portrait else ""
            call = functools.partial(
                self.engine.variation, source, selfie, preset, payload.seeds, progress=progress, prompt=prompt
            )
        return await asyncio.get_running_loop().run_in_executor(self.batcher.executor, call)

    async def image(self, blob_id: str) -> Image.Image:
        """A stored image, decoded off the loop (100+ ms for big ones: batching and heartbeats keep time)."""
        return await asyncio.to_thread(
            load_image,
            await self.blobs.get(blob_id),
            max_bytes=self.settings.max_upload_bytes,
            max_pixels=self.settings.max_image_pixels,
        )
