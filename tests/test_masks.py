"""Edit masks: thresholding, cleanup, growth, feathering, inversion, user masks, and the tiny CLIPSeg."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from scipy import ndimage

from likeness.errors import EmptyMask, InvalidImage, ModelUnavailable
from likeness.generation._clipseg import TextMasker
from likeness.generation._masks import (
    clean_mask,
    composite,
    load_user_mask,
    mask_from_probabilities,
    mask_from_user_image,
)

H, W = 80, 100


def blob(top: int = 20, left: int = 30, bottom: int = 60, right: int = 70, value: float = 0.9) -> np.ndarray:
    probs = np.full((H, W), 0.05, np.float32)
    probs[top:bottom, left:right] = value
    return probs


def test_threshold_keeps_the_confident_region() -> None:
    mask = mask_from_probabilities(blob(), label="hair", grow=0.0)
    expected = np.zeros((H, W), bool)
    expected[20:60, 30:70] = True
    assert np.array_equal(mask.region, expected)
    assert mask.coverage == pytest.approx(expected.mean())
    # Below the threshold is not the region.
    with pytest.raises(EmptyMask):
        mask_from_probabilities(blob(value=0.9), label="hair", threshold=0.95)


def test_small_islands_and_holes_are_cleaned() -> None:
    probs = blob()
    probs[2:4, 2:4] = 0.99  # a 4-pixel speck far away
    probs[40:42, 50:52] = 0.0  # a 4-pixel hole inside
    region = mask_from_probabilities(probs, label="hair", grow=0.0).region
    assert not region[2:4, 2:4].any()
    assert region[40:42, 50:52].all()


def test_clean_mask_keeps_large_parts() -> None:
    region = np.zeros((H, W), bool)
    region[0:30, 0:30] = True
    region[50:80, 60:100] = True
    assert np.array_equal(clean_mask(region), region)


def test_growth_and_feathering() -> None:
    mask = mask_from_probabilities(blob(), label="hair", grow=0.1)  # margin 8 px
    assert mask.area[mask.region].all()
    assert mask.area.sum() > mask.region.sum()
    assert mask.area[20:60, 22:30].all() and not mask.area[20:60, :21].any()
    assert (mask.alpha[mask.region] == 1.0).all()
    assert (mask.alpha[~mask.area] == 0.0).all()
    band = mask.area & ~mask.region
    assert ((mask.alpha[band] > 0) & (mask.alpha[band] < 1)).all()
    # The feather fades outward: nearer the region means more weight.
    assert mask.alpha[40, 29] > mask.alpha[40, 25] > mask.alpha[40, 22]
    assert mask.image().mode == "L" and mask.image().size == (W, H)


def test_inversion_makes_the_background() -> None:
    person = blob()
    mask = mask_from_probabilities(person, label="person", invert=True, grow=0.0)
    assert not mask.region[20:60, 30:70].any()
    assert mask.region[:20].all() and mask.region[:, :30].all()


@pytest.mark.parametrize(
    ("probs", "invert", "words"),
    [
        (np.zeros((H, W), np.float32), False, "couldn't find the hair"),
        (np.ones((H, W), np.float32), False, "covers almost the whole image"),
        (np.ones((H, W), np.float32), True, "fills the whole picture"),
        (np.zeros((H, W), np.float32), True, "couldn't find the hair in this image, so everything would be redrawn"),
        # The person fills the frame except a 3-pixel speck: cleaned away, so there is no background.
        (np.where(np.add.outer(np.arange(H), np.arange(W)) < 2, 0.0, 0.9), True, "fills the whole picture"),
    ],
)
def test_empty_or_all_covering_mask_is_a_user_error(probs: np.ndarray, invert: bool, words: str) -> None:
    with pytest.raises(EmptyMask) as info:
        mask_from_probabilities(probs, label="hair", invert=invert)
    assert words in info.value.user_message
    assert "mask image" in info.value.user_message or "whole picture" in info.value.user_message


def test_user_mask_is_resized_and_binarised() -> None:
    drawn = Image.new("L", (W * 2, H * 2), 0)
    drawn.paste(255, (60, 40, 140, 120))  # → (30, 20, 70, 60) at image size
    mask = mask_from_user_image(drawn.convert("RGB"), (W, H))
    assert mask.region.shape == (H, W)
    assert mask.region[22:58, 32:68].all() and not mask.region[:18].any() and not mask.region[:, :28].any()
    assert set(np.unique(mask.alpha)) <= {0.0, 1.0}


def test_user_mask_transparency_counts_as_keep() -> None:
    drawn = Image.new("RGBA", (W, H), (255, 255, 255, 0))  # white but fully transparent
    drawn.paste((255, 255, 255, 255), (30, 20, 70, 60))
    mask = mask_from_user_image(drawn, (W, H))
    assert mask.region[20:60, 30:70].all() and mask.coverage == pytest.approx(0.2)


@pytest.mark.parametrize(("colour", "words"), [(0, "all black"), (255, "all white")])
def test_user_mask_empty_or_full(colour: int, words: str) -> None:
    with pytest.raises(EmptyMask, match=words):
        mask_from_user_image(Image.new("L", (W, H), colour), (W, H))


def test_uploaded_mask_keeps_transparency() -> None:
    drawn = Image.new("RGBA", (W, H), (255, 255, 255, 0))
    drawn.paste((255, 255, 255, 255), (30, 20, 70, 60))
    buf = io.BytesIO()
    drawn.save(buf, format="PNG")
    loaded = load_user_mask(buf.getvalue(), max_bytes=10**6, max_pixels=10**6)
    assert mask_from_user_image(loaded, (W, H)).coverage == pytest.approx(0.2)
    with pytest.raises(InvalidImage):
        load_user_mask(b"not an image", max_bytes=10**6, max_pixels=10**6)
    with pytest.raises(InvalidImage, match="too large"):
        load_user_mask(buf.getvalue(), max_bytes=10, max_pixels=10**6)


def test_user_mask_with_another_shape_is_refused() -> None:
    with pytest.raises(InvalidImage, match="same shape"):
        mask_from_user_image(Image.new("L", (H, H), 255), (W, H))


def test_composite_keeps_outside_pixels_exactly() -> None:
    rng = np.random.default_rng(0)
    source = Image.fromarray(rng.integers(0, 256, (H, W, 3), dtype=np.uint8))
    generated = Image.fromarray(rng.integers(0, 256, (H, W, 3), dtype=np.uint8))
    mask = mask_from_probabilities(blob(), label="hair", grow=0.05)
    out = np.asarray(composite(source, generated, mask))
    assert np.array_equal(out[~mask.area], np.asarray(source)[~mask.area])
    assert np.array_equal(out[mask.region], np.asarray(generated)[mask.region])


@pytest.fixture(scope="module")
def tiny_masker(tmp_path_factory: pytest.TempPathFactory) -> TextMasker:
    return TextMasker.load("tiny", tmp_path_factory.mktemp("clipseg"))


def test_tiny_clipseg_runs_end_to_end(tiny_masker: TextMasker) -> None:
    rng = np.random.default_rng(1)
    image = Image.fromarray(rng.integers(0, 256, (H, W, 3), dtype=np.uint8))
    hair = tiny_masker(image, ["hair"])
    sky = tiny_masker(image, ["sky"])
    assert hair.shape == (H, W) and hair.dtype == np.float32
    assert hair.min() >= 0.0 and hair.max() <= 1.0
    assert not np.allclose(hair, sky), "the query must steer the mask"
    union = tiny_masker(image, ["hair", "sky"])
    np.testing.assert_allclose(union, np.maximum(hair, sky), atol=1e-5)
    with pytest.raises(ValueError):
        tiny_masker(image, [])


def test_tiny_clipseg_is_built_once(tmp_path: Path) -> None:
    TextMasker.load("tiny", tmp_path)
    folders = list((tmp_path / "models").iterdir())
    TextMasker.load("tiny-sd15", tmp_path)
    assert list((tmp_path / "models").iterdir()) == folders and len(folders) == 1


def test_missing_production_segmenter_is_a_service_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A folder that does not exist stands in for weights that were never pulled (no network in tests).
    monkeypatch.setattr("likeness.generation._clipseg.CLIPSEG_MODEL", str(tmp_path / "not-pulled"))
    with pytest.raises(ModelUnavailable, match="segmentation"):
        TextMasker.load("sdxl-realvis", tmp_path)


@settings(max_examples=40, deadline=None)
@given(
    st.integers(0, 2**32 - 1),
    st.floats(0.2, 0.7),
    st.floats(0.0, 0.08),
    st.booleans(),
)
def test_any_mask_keeps_outside_pixels_and_fills_inside(seed: int, threshold: float, grow: float, invert: bool) -> None:
    rng = np.random.default_rng(seed)
    probs = ndimage.gaussian_filter(rng.random((H, W)), sigma=6).astype(np.float32)
    probs = (probs - probs.min()) / (np.ptp(probs) or 1.0)
    try:
        mask = mask_from_probabilities(probs, label="thing", threshold=threshold, grow=grow, invert=invert)
    except EmptyMask:
        return
    assert mask.area[mask.region].all() and 0.005 <= mask.coverage <= 0.97
    source = Image.fromarray(rng.integers(0, 256, (H, W, 3), dtype=np.uint8))
    generated = Image.fromarray(rng.integers(0, 256, (H, W, 3), dtype=np.uint8))
    out = np.asarray(composite(source, generated, mask))
    assert np.array_equal(out[~mask.area], np.asarray(source)[~mask.area])
    assert np.array_equal(out[mask.region], np.asarray(generated)[mask.region])
