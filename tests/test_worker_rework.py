"""Edits, variations and output safety through queue and worker, on the real tiny engine."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from PIL import Image

from likeness.config import Settings
from likeness.errors import BadInstruction
from likeness.provenance import read_provenance
from likeness.queue import Origin
from likeness.requests import PortraitSpec, edit_spec
from tests.helpers.faces import astronaut, jpeg_with_exif
from tests.helpers.queue import next_deliveries
from tests.helpers.stack import running_stack

pytestmark = pytest.mark.timeout(180)

ORIGIN = Origin(platform="telegram", chat_id="c1", user_id="u1", message_id="m1")


@pytest.fixture
def settings(make_settings: Callable[..., Settings], redis_url: str) -> Settings:
    return make_settings(redis_url=redis_url)


def _png_mask(size: tuple[int, int], box: tuple[int, int, int, int]) -> bytes:
    mask = Image.new("L", size, 0)
    mask.paste(255, box)
    buf = io.BytesIO()
    mask.save(buf, "PNG")
    return buf.getvalue()


async def _pixels(queue: Any, blob_id: str) -> np.ndarray:
    with Image.open(io.BytesIO(await queue.get_image(blob_id))) as image:
        return np.asarray(image.convert("RGB"), dtype=np.int16)


async def test_edit_reroll_of_edit_and_variations(settings: Settings, tiny_engine: Any) -> None:
    async with running_stack(settings, tiny_engine) as core:
        queue = core.queue
        await queue.submit_portrait(ORIGIN, jpeg_with_exif(astronaut()), PortraitSpec(preset="ghibli"))
        (portrait,) = await next_deliveries(settings, 1, timeout=60)
        assert portrait.ok, portrait.user_message
        source = await _pixels(queue, portrait.result.image_blob_ids[0])
        h, w = source.shape[:2]
        box = (w // 4, h // 4, w // 2, h // 2)

        crown = edit_spec("a golden crown", has_mask=True, max_chars=400)
        await queue.submit_edit(ORIGIN, portrait.result.result_id, crown, mask=_png_mask((w, h), box))
        (edit,) = await next_deliveries(settings, 1, timeout=60)
        assert edit.ok, edit.user_message
        assert edit.result.parent_id == portrait.result.result_id
        assert edit.result.metadata.instruction == "a golden crown"
        edited = await _pixels(queue, edit.result.image_blob_ids[0])
        outside = np.ones((h, w), bool)
        outside[box[1] - 4 : box[3] + 4, box[0] - 4 : box[2] + 4] = False  # the mask may grow a little
        assert (edited[outside] == source[outside]).all(), "pixels outside the mask are kept exactly"
        assert (edited[box[1] : box[3], box[0] : box[2]] != source[box[1] : box[3], box[0] : box[2]]).any()

        await queue.submit_reroll(ORIGIN, edit.result.result_id)
        (again,) = await next_deliveries(settings, 1, timeout=60)
        assert again.ok and again.kind == "reroll" and again.result.request.mode == "edit"
        assert again.result.metadata.instruction == "a golden crown"
        assert again.result.seeds != edit.result.seeds
        assert again.result.request.source_blob_id == edit.result.request.source_blob_id

        await queue.submit_variations(ORIGIN, edit.result.result_id, count=2)
        (variations,) = await next_deliveries(settings, 1, timeout=60)
        assert variations.ok and variations.result.request.mode == "variation"
        assert variations.result.request.source_blob_id == edit.result.image_blob_ids[0]
        a, b = [await _pixels(queue, blob) for blob in variations.result.image_blob_ids]
        assert a.shape == edited.shape and (a != b).any() and (a != edited).any()


async def test_unknown_instructions_are_answered_before_enqueue(settings: Settings, tiny_engine: Any) -> None:
    async with running_stack(settings, tiny_engine) as core:
        await core.queue.submit_portrait(ORIGIN, jpeg_with_exif(astronaut()), PortraitSpec(preset="ghibli"))
        (portrait,) = await next_deliveries(settings, 1, timeout=60)
        with pytest.raises(BadInstruction) as err:
            await core.edit(ORIGIN, portrait.result.result_id, "   ")
        assert "hair" in err.value.user_message  # the answer shows examples
        assert (await core.queue.stats()).queued == 0


async def test_every_stored_image_is_classified_and_marked_as_ai_generated(
    settings: Settings, tiny_engine: Any
) -> None:
    async with running_stack(settings, tiny_engine) as core:
        params = PortraitSpec(preset="anime", count=2)
        await core.queue.submit_portrait(ORIGIN, jpeg_with_exif(astronaut()), params)
        (delivery,) = await next_deliveries(settings, 1, timeout=60)
        assert delivery.ok
        scores = delivery.result.metadata.nsfw_scores
        assert len(scores) == 2 and all(0.0 <= s <= 1.0 for s in scores)
        for blob in delivery.result.image_blob_ids:
            data = await core.queue.get_image(blob)
            marker = read_provenance(data)
            assert marker is not None and "trainedAlgorithmicMedia" in str(marker)
            with Image.open(io.BytesIO(data)) as image:
                assert not image.getexif(), "no input EXIF (GPS, camera) survives"
