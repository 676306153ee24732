"""Identity on the tiny engine: face crops for the adapter, face errors and notices, likeness scores on every
output, both adapter kinds (plus-face, FaceID-Plus-v2), and the best-of-N guard."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from likeness.config import Settings
from likeness.errors import ConfigError, NoFace
from likeness.generation import (
    BUILTIN_MODELS,
    EditRequest,
    PortraitRequest,
    StableDiffusionEngine,
    identity_image,
    required_weights,
)
from likeness.generation._identity import SelfieFaces
from likeness.presets import PresetCatalog
from likeness.requests import parse_instruction
from tests.helpers.faces import astronaut, coffee, grace_hopper, shared_analyzer, two_faces
from tests.helpers.identity import ArcFaceStandIn, brightness_scorer


def _settings(data_dir: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {"model": "tiny", "device": "cpu", "dtype": "float32", "data_dir": data_dir}
    return Settings(_env_file=None, **{**values, **overrides})  # type: ignore[call-arg]


@pytest.fixture(scope="module")
def engine(shared_data_dir: Path) -> Iterator[StableDiffusionEngine]:
    built = StableDiffusionEngine.load(_settings(shared_data_dir), face_analyzer=shared_analyzer())
    yield built
    built.close()


def _with(engine: StableDiffusionEngine, scorer: Any = brightness_scorer, **settings: Any) -> StableDiffusionEngine:
    """Another engine on the same loaded weights, with a scorer and settings of the test's choosing."""
    return StableDiffusionEngine(
        engine.settings.model_copy(update=settings),
        engine.spec,
        engine.model,
        engine.presets,
        shared_analyzer(),
        scorer=scorer,
    )


def _request(
    engine: StableDiffusionEngine, selfie: Image.Image, spec: str = "headshot", **kwargs: Any
) -> PortraitRequest:
    return PortraitRequest(selfie=selfie, preset=engine.presets.resolve(spec), **kwargs)


def _px(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def _is_score(value: object) -> bool:
    return value is None or (isinstance(value, float) and 0.0 <= value <= 100.0)


# --- the face crop ---------------------------------------------------------------------------------------


def test_adapter_sees_the_aligned_face_crop_not_the_photo(
    engine: StableDiffusionEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[Image.Image] = []
    encode = engine.model.pipe.encode_image

    def spy(image: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append(image)
        return encode(image, *args, **kwargs)

    monkeypatch.setattr(engine.model.pipe, "encode_image", spy)
    selfie = astronaut()
    engine.portrait(_request(engine, selfie))
    (crop,) = seen
    assert crop.tobytes() == identity_image(selfie, shared_analyzer()).tobytes()
    # The face fills the middle of the crop; in the photo it sits well above the centre.
    in_photo = shared_analyzer().main_face(selfie)
    in_crop = shared_analyzer().main_face(crop)
    assert in_photo is not None and in_crop is not None
    assert abs(in_photo.box.center[1] - selfie.height / 2) > 0.15 * selfie.height
    cx, cy = in_crop.box.center
    assert abs(cx - crop.width / 2) < 0.1 * crop.width and abs(cy - crop.height / 2) < 0.15 * crop.height
    assert in_crop.box.side > 0.4 * crop.width


def test_the_background_outside_the_face_crop_does_not_matter(engine: StableDiffusionEngine) -> None:
    selfie = astronaut()
    analysis = shared_analyzer().analyze(selfie)
    repainted = selfie.copy()
    # Paint over everything below the face crop (the crop is ≈ 1.8 face sides around the face).
    below = round(analysis.face.box.bottom + 1.2 * analysis.face.box.side)
    assert below < 0.7 * selfie.height  # a real change to the photo
    repainted.paste((40, 90, 160), (0, below, selfie.width, selfie.height))
    first = engine.portrait(_request(engine, selfie, seeds=(3,))).images[0]
    second = engine.portrait(_request(engine, repainted, seeds=(3,))).images[0]
    assert np.abs(_px(first) - _px(second)).max() <= 1


def test_a_selfie_is_analysed_once_per_call_and_cached(engine: StableDiffusionEngine) -> None:
    faces = SelfieFaces(shared_analyzer())
    own = StableDiffusionEngine(engine.settings, engine.spec, engine.model, engine.presets, shared_analyzer())
    own.faces = faces
    selfie = grace_hopper()
    batch = [_request(own, selfie, seeds=(1,)), _request(own, grace_hopper(), seeds=(2,))]
    own.portrait_batch(batch)
    assert faces.analyses == 1  # same pixels, two image objects: one analysis
    result = own.portrait(_request(own, selfie, seeds=(4,)))
    own.variation(result.images[0], grace_hopper(), own.presets.resolve("headshot"), seeds=(5,))
    assert faces.analyses == 1


# --- face errors and notices -----------------------------------------------------------------------------


def test_selfie_without_a_face_is_a_user_error_everywhere(engine: StableDiffusionEngine) -> None:
    with pytest.raises(NoFace) as raised:
        engine.portrait(_request(engine, coffee()))
    assert "face" in raised.value.user_message.lower()
    source = engine.portrait(_request(engine, astronaut())).images[0]
    with pytest.raises(NoFace):
        engine.variation(source, coffee(), engine.presets.resolve("headshot"))
    with pytest.raises(NoFace):
        engine.edit(
            EditRequest(
                source, coffee(), parse_instruction("lighting: golden hour"), engine.presets.resolve("headshot")
            )
        )


def test_two_faces_give_a_notice_in_the_metadata(engine: StableDiffusionEngine) -> None:
    result = engine.portrait(_request(engine, two_faces()))
    assert result.metadata["faces_found"] == 2
    assert result.metadata["notices"] == ["I found 2 faces and used the largest one."]
    assert engine.portrait(_request(engine, astronaut())).metadata["notices"] == []


# --- likeness scores -------------------------------------------------------------------------------------


def test_every_output_has_a_likeness_score(engine: StableDiffusionEngine) -> None:
    preset = engine.presets.resolve("headshot")
    single = engine.portrait(_request(engine, astronaut(), seeds=(1, 2, 3)))
    batched = engine.portrait_batch([_request(engine, astronaut(), seeds=(4,)), _request(engine, grace_hopper())])
    source = single.images[0]
    edited = engine.edit(EditRequest(source, astronaut(), parse_instruction("lighting: golden hour"), preset))
    varied = engine.variation(source, astronaut(), preset, seeds=(7, 8))
    for result in (single, *batched, edited, varied):
        scores = result.metadata["likeness_scores"]
        assert len(scores) == len(result.images) == len(result.seeds)
        assert all(_is_score(score) for score in scores), scores
        assert json.loads(json.dumps(result.metadata)) == result.metadata


def test_scores_are_real_numbers_when_the_output_shows_the_face(engine: StableDiffusionEngine) -> None:
    """An edit of the selfie photo itself, masked to one corner, keeps the face: the real scorer rates it high."""
    photo = astronaut()
    mask = Image.new("L", photo.size, 0)
    mask.paste(255, (440, 440, 512, 512))
    result = engine.edit(
        EditRequest(
            photo,
            astronaut(),
            parse_instruction("a tattoo", has_mask=True),
            engine.presets.resolve("headshot"),
            mask=mask,
        )
    )
    (score,) = result.metadata["likeness_scores"]
    assert isinstance(score, float) and score > 80
    other = engine.edit(
        EditRequest(
            photo,
            grace_hopper(),
            parse_instruction("a tattoo", has_mask=True),
            engine.presets.resolve("headshot"),
            mask=mask,
        )
    )
    (low,) = other.metadata["likeness_scores"]
    assert isinstance(low, float) and low < 50


# --- adapters --------------------------------------------------------------------------------------------


def test_plus_face_output_depends_on_the_face(engine: StableDiffusionEngine) -> None:
    assert engine.spec.identity_adapter.kind == "plus-face"
    first = engine.portrait(_request(engine, astronaut(), seeds=(9,)))
    other = engine.portrait(_request(engine, grace_hopper(), seeds=(9,)))
    assert np.abs(_px(first.images[0]) - _px(other.images[0])).max() > 10
    assert first.metadata["identity_adapter"] == "plus-face"


def test_faceid_models_name_their_weights() -> None:
    for key, family in (("sdxl-faceid", "sdxl"), ("sd15-faceid", "sd15")):
        spec = BUILTIN_MODELS[key]
        assert spec.identity_adapter.kind == "faceid-plus-v2" and spec.family == family
        refs = {(ref.repo_or_path, ref.filenames) for ref in required_weights(spec)}
        assert ("h94/IP-Adapter-FaceID", (f"ip-adapter-faceid-plusv2_{family}.bin",)) in refs
        assert ("h94/IP-Adapter", "models/image_encoder") in {
            (r.repo_or_path, r.subfolder) for r in required_weights(spec)
        }
        assert "non-commercial" in spec.license


def test_faceid_model_needs_arcface_embeddings(shared_data_dir: Path) -> None:
    with pytest.raises(ConfigError, match="insightface"):
        StableDiffusionEngine.load(_settings(shared_data_dir, model="tiny-faceid"), face_analyzer=shared_analyzer())


def test_faceid_path_uses_embedding_and_crop(shared_data_dir: Path) -> None:
    faceid = StableDiffusionEngine.load(
        _settings(shared_data_dir, model="tiny-faceid"), face_analyzer=ArcFaceStandIn(seed=0)
    )
    try:
        assert faceid.spec.identity_adapter.kind == "faceid-plus-v2"
        assert "faceid_0" in faceid.model.pipe.unet.peft_config  # the LoRA its checkpoint ships

        def run(selfie: Image.Image, spec: str = "headshot", **kwargs: Any) -> Any:
            return faceid.portrait(_request(faceid, selfie, spec, seeds=(2,), **kwargs))

        base = run(astronaut())
        assert base.metadata["identity_adapter"] == "faceid-plus-v2"
        assert all(_is_score(s) for s in base.metadata["likeness_scores"])
        # Another face changes the output; so does another ID embedding of the same crop.
        assert np.abs(_px(run(grace_hopper()).images[0]) - _px(base.images[0])).max() > 10
        faceid.faces = SelfieFaces(ArcFaceStandIn(seed=1))
        assert np.abs(_px(run(astronaut()).images[0]) - _px(base.images[0])).max() > 0
        faceid.faces = SelfieFaces(ArcFaceStandIn(seed=0))
        assert run(astronaut()).images[0].tobytes() == base.images[0].tobytes()
        # A style LoRA joins the FaceID LoRA instead of replacing it; back without it, the LoRA is still on.
        styled = run(astronaut(), "ghibli")
        assert faceid.model.pipe.get_active_adapters()[0] == "faceid_0"
        assert np.abs(_px(styled.images[0]) - _px(base.images[0])).max() > 10
        assert run(astronaut()).images[0].tobytes() == base.images[0].tobytes()
        # Batched FaceID requests keep their own embeddings (diffusers #9813 applies to clip_embeds too).
        alone = run(grace_hopper())
        batched = faceid.portrait_batch(
            [_request(faceid, astronaut(), seeds=(2,)), _request(faceid, grace_hopper(), seeds=(2,))]
        )
        assert np.abs(_px(batched[0].images[0]) - _px(base.images[0])).max() <= 1
        assert np.abs(_px(batched[1].images[0]) - _px(alone.images[0])).max() <= 1
        # Edits and variations run through the same adapter path.
        varied = faceid.variation(base.images[0], astronaut(), faceid.presets.resolve("headshot"), seeds=(3,))
        assert varied.metadata["identity_adapter"] == "faceid-plus-v2" and len(varied.images) == 1
    finally:
        faceid.close()


# --- best-of-N -------------------------------------------------------------------------------------------


def test_best_of_returns_the_top_candidates_and_records_them(engine: StableDiffusionEngine) -> None:
    guarded = _with(engine, likeness_threshold=0.0)
    result = guarded.portrait(_request(guarded, astronaut(), seeds=(5, 6), best_of=3))
    record = result.metadata["best_of"]
    candidates = record["candidates"]
    assert len(candidates) == 6 and record["tries"] == 1 and record["per_image"] == 3
    assert [c["seed"] for c in candidates][:2] == [5, 6]  # the asked seeds are candidates themselves
    top_two = sorted((c["score"] for c in candidates), reverse=True)[:2]  # (recorded scores are rounded: ties)
    chosen = [next(c for c in candidates if c["seed"] == seed) for seed in result.seeds]
    assert result.seeds == record["chosen_seeds"] and [c["score"] for c in chosen] == top_two
    assert result.metadata["likeness_scores"] == top_two
    assert [round(brightness_scorer(None, image), 1) for image in result.images] == top_two  # type: ignore[arg-type]
    # A chosen seed reproduces alone (reroll / lineage), at the recorded identity strength.
    again = engine.portrait(
        _request(engine, astronaut(), seeds=(result.seeds[0],), identity_scale=result.metadata["identity_scales"][0])
    )
    assert again.images[0].tobytes() == result.images[0].tobytes()
    # Same request, same candidates: best-of is deterministic.
    assert guarded.portrait(_request(guarded, astronaut(), seeds=(5, 6), best_of=3)).seeds == result.seeds


def test_best_of_retries_once_with_more_identity_when_all_fall_short(engine: StableDiffusionEngine) -> None:
    strict = _with(engine, likeness_threshold=100.0)  # brightness never reaches 100 %
    result = strict.portrait(_request(strict, astronaut(), seeds=(1,), best_of=2))
    record = result.metadata["best_of"]
    assert record["tries"] == 2 and len(record["candidates"]) == 4
    assert [c["try"] for c in record["candidates"]] == [1, 1, 2, 2]
    first, second = record["identity_strengths"]
    assert second == pytest.approx(min(first + 0.2, 1.0)) and second > first
    winner = max(record["candidates"], key=lambda c: c["score"])
    assert result.seeds == [winner["seed"]]
    assert result.metadata["identity_scales"] == [(first, second)[winner["try"] - 1]]
    assert result.metadata["identity_scale"] == result.metadata["identity_scales"][0]


def test_best_of_with_the_real_scorer_and_preset_setting(engine: StableDiffusionEngine, tmp_path: Path) -> None:
    (tmp_path / "picky.toml").write_text(
        'title = "Picky"\nemoji = "🎯"\ndescription = "d"\ncategory = "t"\nprompt = "{subject}, {prompt}"\n'
        "[defaults]\nsteps = 4\nbest_of = 3\n"
    )
    (tmp_path / "easy.toml").write_text(
        'title = "Easy"\nemoji = "🙂"\ndescription = "d"\ncategory = "t"\nprompt = "{subject} smiling"\n'
        "[defaults]\nsteps = 4\nbest_of = 2\n"
    )
    catalog = PresetCatalog.load(tmp_path)
    assert catalog.resolve("picky:0.2+easy:0.8").defaults.best_of == 3  # fusion: the largest wins
    result = engine.portrait(PortraitRequest(selfie=astronaut(), preset=catalog.resolve("picky"), seeds=(3,)))
    record = result.metadata["best_of"]
    assert record["per_image"] == 3
    scores = [c["score"] for c in record["candidates"]]
    assert all(_is_score(s) for s in scores)
    # Tiny random weights draw no faces: nothing reaches the threshold, so the one retry ran.
    if all(s is None or s < engine.settings.likeness_threshold for s in scores[:3]):
        assert record["tries"] == 2 and len(scores) == 6
    assert len(result.images) == 1 and result.seeds == record["chosen_seeds"]


def test_batched_best_of_keeps_each_requests_candidates(engine: StableDiffusionEngine) -> None:
    guarded = _with(engine, likeness_threshold=0.0)
    requests = [
        _request(guarded, astronaut(), seeds=(21,), best_of=2),
        _request(guarded, grace_hopper(), seeds=(22, 23), best_of=3),
        _request(guarded, astronaut(), seeds=(24,)),
    ]
    batched = guarded.portrait_batch(requests)
    for request, result in zip(requests, batched, strict=True):
        alone = guarded.portrait(request)
        assert result.metadata.get("best_of") == alone.metadata.get("best_of")
        assert result.seeds == alone.seeds and len(result.images) == len(request.seeds)
        for mine, theirs in zip(result.images, alone.images, strict=True):
            assert np.abs(_px(mine) - _px(theirs)).max() <= 1
    assert len(batched[1].metadata["best_of"]["candidates"]) == 6
    assert "best_of" not in batched[2].metadata and batched[2].seeds == [24]
