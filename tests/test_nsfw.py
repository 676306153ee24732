"""NSFW guards: the tiny classifier through the real from_pretrained path, load failures, nudenet, off."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest
from PIL import Image

from likeness.bot._safety import Decision, Place, decide
from likeness.errors import ConfigError, ModelUnavailable
from likeness.generation._nsfw import (
    NsfwGuard,
    NudeNetGuard,
    OffGuard,
    TransformersNsfwGuard,
    build_tiny_nsfw_classifier,
    load_nsfw_guard,
)


def test_tiny_classifier_loads_through_from_pretrained_and_scores_probabilities(make_settings) -> None:
    settings = make_settings()
    guard = load_nsfw_guard(settings)
    assert isinstance(guard, TransformersNsfwGuard) and isinstance(guard, NsfwGuard)
    assert Path(guard.name) == settings.data_dir / "models" / "tiny-nsfw-classifier-v2"
    assert guard.labels == {0: "normal", 1: "nsfw"}
    images = [Image.new("RGB", (64, 64), (255, 0, 0)), Image.new("L", (80, 48), 30), Image.new("RGB", (33, 90))]
    scores = guard.score(images)
    assert len(scores) == 3 and all(0.0 <= s <= 1.0 for s in scores)
    assert scores[0] != scores[1]  # it really looks at the pixels
    assert guard.score([images[0]]) == pytest.approx([scores[0]], abs=1e-5)  # batch-independent
    assert guard.score([]) == []
    # the score feeds the delivery decision unchanged
    assert decide(scores[0], Place(age_restricted=False), settings) in (Decision.DELIVER, Decision.WITHHOLD)


def test_tiny_classifier_is_built_once(tmp_path: Path) -> None:
    first = build_tiny_nsfw_classifier(tmp_path)
    stamp = (first / "config.json").stat().st_mtime_ns
    assert build_tiny_nsfw_classifier(tmp_path) == first
    assert (first / "config.json").stat().st_mtime_ns == stamp
    assert not [p for p in first.parent.iterdir() if p.name.startswith(".tiny-nsfw-")]  # no staging left over


def test_hub_model_offline_is_model_unavailable_with_reason(make_settings) -> None:
    settings = make_settings(model="sdxl-realvis", nsfw_model="Falconsai/nsfw_image_detection")
    with pytest.raises(ModelUnavailable) as info:
        load_nsfw_guard(settings)
    assert "Falconsai/nsfw_image_detection" in info.value.user_message
    assert info.value.reason


def test_checkpoint_without_an_nsfw_label_is_refused(tmp_path: Path) -> None:
    import json
    import shutil

    folder = tmp_path / "cats"
    shutil.copytree(build_tiny_nsfw_classifier(tmp_path / "data"), folder)
    config = json.loads((folder / "config.json").read_text())
    config["id2label"] = {"0": "cat", "1": "dog"}
    config["label2id"] = {"cat": 0, "dog": 1}
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelUnavailable, match="NSFW"):
        TransformersNsfwGuard.from_pretrained(folder)


def test_off_guard_flags_nothing(make_settings) -> None:
    guard = load_nsfw_guard(make_settings(nsfw_backend="off"))
    assert isinstance(guard, OffGuard)
    assert guard.score([Image.new("RGB", (8, 8))] * 2) == [0.0, 0.0]


def test_nudenet_missing_is_a_config_error_with_install_hint(make_settings, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "nudenet", None)  # import fails as if not installed
    with pytest.raises(ConfigError, match="pip install nudenet"):
        load_nsfw_guard(make_settings(nsfw_backend="nudenet"))


def test_nudenet_score_is_the_strongest_exposed_detection(make_settings, monkeypatch) -> None:
    seen: list[bytes] = []

    class NudeDetector:
        def detect(self, data: bytes) -> list[dict[str, object]]:
            seen.append(data)
            if len(seen) == 1:
                return [
                    {"class": "FACE_FEMALE", "score": 0.95, "box": [0, 0, 4, 4]},
                    {"class": "FEMALE_BREAST_EXPOSED", "score": 0.62, "box": [0, 0, 4, 4]},
                    {"class": "BUTTOCKS_EXPOSED", "score": 0.71, "box": [0, 0, 4, 4]},
                ]
            return [{"class": "BELLY_COVERED", "score": 0.9, "box": [0, 0, 4, 4]}]

    monkeypatch.setitem(sys.modules, "nudenet", types.SimpleNamespace(NudeDetector=NudeDetector))
    guard = load_nsfw_guard(make_settings(nsfw_backend="nudenet"))
    assert isinstance(guard, NudeNetGuard)
    assert guard.score([Image.new("RGB", (16, 16)), Image.new("RGBA", (16, 16))]) == [0.71, 0.0]
    assert all(data.startswith(b"\x89PNG") for data in seen)


def test_real_nudenet_model_runs_on_a_photo() -> None:
    pytest.importorskip("nudenet")
    from skimage import data

    guard = NudeNetGuard()
    photo = Image.fromarray(data.astronaut())
    assert "FACE_FEMALE" in {d["class"] for d in guard.detections(photo)}  # the shipped ONNX model really ran
    assert guard.score([photo]) == [0.0]  # a clothed portrait is not flagged
