"""Edits on the tiny engine: exact pixels outside the mask, background, looks, chains, variations."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from likeness.config import Settings
from likeness.errors import EmptyMask, GenerationFailed, OutOfMemory
from likeness.generation import EditRequest, PortraitRequest, StableDiffusionEngine
from likeness.generation._edits import edit
from likeness.requests import parse_instruction
from tests.helpers.faces import astronaut, grace_hopper


@pytest.fixture(scope="module")
def engine(shared_data_dir: Path) -> Iterator[StableDiffusionEngine]:
    settings = Settings(_env_file=None, model="tiny", device="cpu", dtype="float32", data_dir=shared_data_dir)  # type: ignore[call-arg]
    engine = StableDiffusionEngine.load(settings)
    yield engine
    engine.close()


def _noise(seed: int, size: tuple[int, int] = (96, 96)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def selfie() -> Image.Image:
    return astronaut()


@pytest.fixture(scope="module")
def source(engine: StableDiffusionEngine, selfie: Image.Image) -> Image.Image:
    """A portrait made by the engine: what users reply to."""
    return engine.portrait(PortraitRequest(selfie=selfie, preset=engine.presets.resolve("ghibli"), seeds=(1,))).images[
        0
    ]


def box_masker(top: float, left: float, bottom: float, right: float) -> object:
    """A mask provider that "finds" a box (fractions of the image) whatever the query."""

    def provide(image: Image.Image, queries: Sequence[str]) -> np.ndarray:
        assert queries
        probs = np.full((image.height, image.width), 0.02, np.float32)
        probs[
            int(top * image.height) : int(bottom * image.height), int(left * image.width) : int(right * image.width)
        ] = 0.9
        return probs

    return provide


HAIR = box_masker(0.1, 0.2, 0.45, 0.8)
PERSON = box_masker(0.25, 0.25, 1.0, 0.75)


def request(
    engine: StableDiffusionEngine, source: Image.Image, selfie: Image.Image, text: str, **kw: object
) -> EditRequest:
    has_mask = kw.get("mask") is not None
    return EditRequest(
        source=source,
        selfie=selfie,
        instruction=parse_instruction(text, has_mask=has_mask),
        preset=engine.presets.resolve("ghibli"),
        **kw,  # type: ignore[arg-type]
    )


def pixels(img: Image.Image) -> np.ndarray:
    return np.asarray(img.convert("RGB"), dtype=np.int16)


def region(masker: object, image: Image.Image) -> np.ndarray:
    return masker(image, ["x"]) > 0.5  # type: ignore[operator]


def test_inpaint_changes_only_inside_the_mask(
    engine: StableDiffusionEngine, source: Image.Image, selfie: Image.Image
) -> None:
    steps: list[tuple[int, int]] = []
    result = edit(
        engine,
        request(engine, source, selfie, "make the hair blue", seeds=(3,)),
        lambda *s: steps.append(s),
        masker=HAIR,
    )
    out, src = pixels(result.images[0]), pixels(source)
    assert result.images[0].size == source.size and result.seeds == [3]
    inside = region(HAIR, source)
    margin = round(parse_instruction("make the hair blue").grow * min(source.size)) + 1
    from scipy import ndimage

    grown = ndimage.binary_dilation(inside, iterations=margin)
    assert np.array_equal(out[~grown], src[~grown]), "pixels outside the mask must be the source's, exactly"
    assert np.abs(out[inside] - src[inside]).mean() > 5, "pixels inside the mask must change"
    meta = result.metadata
    assert (meta["kind"], meta["region"], meta["instruction"], meta["mask_source"]) == (
        "edit", "hair", "make the hair blue", "text"
    )  # fmt: skip
    assert meta["mask_coverage"] == pytest.approx(inside.mean(), abs=0.01)
    assert "blue hair" in meta["prompt"] and result.seeds == [3]
    assert steps and steps[-1][0] == steps[-1][1]


def test_small_region_is_inpainted_on_a_crop(
    engine: StableDiffusionEngine, source: Image.Image, selfie: Image.Image
) -> None:
    eyes = box_masker(0.35, 0.3, 0.45, 0.7)
    result = edit(engine, request(engine, source, selfie, "make the eyes green"), masker=eyes)
    assert result.metadata["padding_mask_crop"] is not None
    big = edit(engine, request(engine, source, selfie, "make the hair blue"), masker=box_masker(0, 0, 0.8, 1))
    assert big.metadata["padding_mask_crop"] is None
    inside = region(eyes, source)
    assert np.abs(pixels(result.images[0])[inside] - pixels(source)[inside]).mean() > 5


def test_background_edit_keeps_the_subject(
    engine: StableDiffusionEngine, source: Image.Image, selfie: Image.Image
) -> None:
    result = edit(engine, request(engine, source, selfie, "background: Paris at night"), masker=PERSON)
    out, src = pixels(result.images[0]), pixels(source)
    person = region(PERSON, source)
    from scipy import ndimage

    # The background mask grows into the person by its small margin only; the rest is identical.
    core = ndimage.binary_erosion(person, iterations=round(0.01 * min(source.size)) + 1)
    assert core.sum() > 0.3 * person.sum()
    assert np.array_equal(out[core], src[core])
    assert np.abs(out[~person] - src[~person]).mean() > 5
    assert result.metadata["region"] == "background"


def test_user_mask_edits_exactly_the_white_area(
    engine: StableDiffusionEngine, source: Image.Image, selfie: Image.Image
) -> None:
    drawn = Image.new("L", (source.width * 4, source.height * 4), 0)
    drawn.paste(255, (40, 120, 200, 220))
    result = engine.edit(request(engine, source, selfie, "a small red heart tattoo", mask=drawn))
    white = np.asarray(drawn.resize(source.size, Image.Resampling.BILINEAR)) >= 128
    out, src = pixels(result.images[0]), pixels(source)
    assert np.array_equal(out[~white], src[~white])
    assert np.abs(out[white] - src[white]).mean() > 5
    assert (result.metadata["region"], result.metadata["mask_source"]) == ("mask", "user")


def test_empty_mask_is_a_clear_error(engine: StableDiffusionEngine, source: Image.Image, selfie: Image.Image) -> None:
    with pytest.raises(EmptyMask, match="couldn't find the hair"):
        edit(engine, request(engine, source, selfie, "make the hair blue"), masker=box_masker(0, 0, 0, 0))
    with pytest.raises(EmptyMask, match="person fills the whole picture"):
        edit(engine, request(engine, source, selfie, "background: Paris"), masker=box_masker(0, 0, 1, 1))
    with pytest.raises(EmptyMask, match="all black"):
        engine.edit(request(engine, source, selfie, "a hat", mask=Image.new("L", source.size, 0)))


def test_lighting_edit_keeps_size_and_changes_pixels(engine: StableDiffusionEngine, selfie: Image.Image) -> None:
    odd = _noise(5, (70, 50))  # not a multiple of the model's size step
    result = engine.edit(request(engine, odd, selfie, "lighting: golden hour", seeds=(2,)))
    assert result.images[0].size == odd.size
    assert np.abs(pixels(result.images[0]) - pixels(odd)).mean() > 2
    assert result.metadata["edit_kind"] == "global" and result.metadata["mask_coverage"] is None
    assert result.metadata["strength"] <= 0.5


def test_edit_of_an_edit_builds_on_the_edited_image(
    engine: StableDiffusionEngine, source: Image.Image, selfie: Image.Image
) -> None:
    first = edit(engine, request(engine, source, selfie, "make the hair blue", seeds=(3,)), masker=HAIR).images[0]
    shirt = box_masker(0.7, 0.1, 1.0, 0.9)
    second = edit(engine, request(engine, first, selfie, "change the shirt to a tuxedo", seeds=(4,)), masker=shirt)
    out, mid, src = pixels(second.images[0]), pixels(first), pixels(source)
    hair = region(HAIR, source)
    assert np.array_equal(out[hair], mid[hair]), "the first edit survives the second"
    assert np.abs(out[hair] - src[hair]).mean() > 5
    assert second.metadata["instruction"] == "change the shirt to a tuxedo"


def test_reroll_of_an_edit_differs_and_a_seed_repeats(
    engine: StableDiffusionEngine, source: Image.Image, selfie: Image.Image
) -> None:
    def run(seed: int) -> np.ndarray:
        return pixels(
            edit(engine, request(engine, source, selfie, "make the hair blue", seeds=(seed,)), masker=HAIR).images[0]
        )

    first, again, other = run(10), run(10), run(11)
    assert np.array_equal(first, again)
    inside = region(HAIR, source)
    assert np.abs(first[inside] - other[inside]).mean() > 2
    # Several seeds in one call (cropped inpaint included) give each seed's own image.
    both = edit(engine, request(engine, source, selfie, "make the hair blue", seeds=(10, 11)), masker=HAIR)
    assert both.metadata["padding_mask_crop"] is not None and both.seeds == [10, 11]
    assert np.abs(pixels(both.images[0]) - first).max() <= 1
    assert np.abs(pixels(both.images[1]) - other).max() <= 1


def test_identity_comes_from_the_selfie(
    engine: StableDiffusionEngine, source: Image.Image, selfie: Image.Image
) -> None:
    mine = edit(engine, request(engine, source, selfie, "make the hair blue"), masker=HAIR).images[0]
    theirs = edit(engine, request(engine, source, grace_hopper(), "make the hair blue"), masker=HAIR).images[0]
    inside = region(HAIR, source)
    assert np.abs(pixels(mine)[inside] - pixels(theirs)[inside]).mean() > 0.5


def test_variations_differ_from_parent_and_each_other(
    engine: StableDiffusionEngine, source: Image.Image, selfie: Image.Image
) -> None:
    result = engine.variation(source, selfie, engine.presets.resolve("ghibli"), seeds=(21, 22))
    a, b = (pixels(img) for img in result.images)
    assert result.seeds == [21, 22] and all(img.size == source.size for img in result.images)
    assert np.abs(a - pixels(source)).mean() > 2 and np.abs(b - pixels(source)).mean() > 2
    assert np.abs(a - b).mean() > 2
    assert result.metadata["kind"] == "variation" and 0.3 <= result.metadata["strength"] <= 0.7
    again = engine.variation(source, selfie, engine.presets.resolve("ghibli"), seeds=(21,))
    # Like portraits: a seed gives the same image alone or batched, within one pixel level.
    assert np.abs(pixels(again.images[0]) - a).max() <= 1


def test_text_masks_come_from_the_tiny_clipseg(
    engine: StableDiffusionEngine, source: Image.Image, selfie: Image.Image
) -> None:
    """The default path segments with CLIPSeg (random tiny weights: the region is noise, the plumbing is real)."""
    try:
        result = engine.edit(request(engine, source, selfie, "make the hair blue"))
    except EmptyMask:
        pytest.fail("the tiny CLIPSeg gave an empty mask; its seeded weights normally give a partial one")
    assert result.metadata["mask_source"] == "text" and 0 < result.metadata["mask_coverage"] < 1
    probs = engine.masker(source, ["hair"])
    assert probs.shape == (source.height, source.width)


def test_bad_strength_is_rejected(engine: StableDiffusionEngine, source: Image.Image, selfie: Image.Image) -> None:
    with pytest.raises(ValueError, match="strength"):
        engine.variation(source, selfie, engine.presets.resolve("ghibli"), strength=0.0)


def test_failures_become_service_errors(
    engine: StableDiffusionEngine, source: Image.Image, selfie: Image.Image
) -> None:
    def broken(message: str) -> object:
        def provide(image: Image.Image, queries: Sequence[str]) -> np.ndarray:
            raise RuntimeError(message)

        return provide

    with pytest.raises(OutOfMemory):
        edit(engine, request(engine, source, selfie, "make the hair blue"), masker=broken("CUDA out of memory"))
    with pytest.raises(GenerationFailed):
        edit(engine, request(engine, source, selfie, "make the hair blue"), masker=broken("boom"))
