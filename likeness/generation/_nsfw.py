"""The output guard: every generated image gets an NSFW probability before it is delivered.

Backends (`settings.nsfw_backend`):
- `transformers` (default): an image-classification checkpoint from the hub, `settings.nsfw_model`
  (default `Falconsai/nsfw_image_detection`, a ViT fine-tune, Apache-2.0). The score is the softmax
  probability of the label(s) named like "nsfw" in the checkpoint's `config.id2label`. Flagging compares it
  with `settings.nsfw_threshold` (default 0.5, i.e. the classifier's own arg-max for a two-label model).
  With `settings.model = "tiny..."` a tiny random ViT with labels {0: normal, 1: nsfw} is built offline
  under `settings.data_dir` and loaded through the same `from_pretrained` path (tests only: its scores
  are meaningless).
- `nudenet`: the optional `nudenet` package (its wheel ships the 320n ONNX detector, AGPL-3.0 licence text;
  see docs/safety.md); the score is the highest confidence of an "exposed" body-part detection.
- `off`: every image scores 0.0. Only for operators who moderate elsewhere.
"""

from __future__ import annotations

import io
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from PIL import Image

from likeness.config import Settings
from likeness.errors import ConfigError, ModelUnavailable

__all__ = [
    "NUDENET_EXPOSED",
    "NsfwGuard",
    "NudeNetGuard",
    "OffGuard",
    "TransformersNsfwGuard",
    "build_tiny_nsfw_classifier",
    "load_nsfw_guard",
]

# Label names (case-insensitive) whose probabilities add up to the NSFW score.
_NSFW_LABELS = frozenset({"nsfw", "porn", "hentai", "sexy", "explicit", "unsafe", "nude", "nudity"})
NUDENET_EXPOSED = frozenset(
    {
        "FEMALE_BREAST_EXPOSED",
        "FEMALE_GENITALIA_EXPOSED",
        "MALE_GENITALIA_EXPOSED",
        "BUTTOCKS_EXPOSED",
        "ANUS_EXPOSED",
    }
)
_TINY_DIR = Path("models") / "tiny-nsfw-classifier-v2"


@runtime_checkable
class NsfwGuard(Protocol):
    """Scores images: one probability in [0, 1] per image that it is sexually explicit."""

    name: str

    def score(self, images: Sequence[Image.Image]) -> list[float]: ...


class OffGuard:
    """The guard switched off: nothing is ever flagged."""

    name = "off"

    def score(self, images: Sequence[Image.Image]) -> list[float]:
        return [0.0] * len(images)


class TransformersNsfwGuard:
    """An image-classification model (`AutoModelForImageClassification` + `AutoImageProcessor`)."""

    def __init__(self, model: Any, processor: Any, *, name: str, device: str = "cpu") -> None:
        labels = {int(i): str(label) for i, label in model.config.id2label.items()}
        self._nsfw_ids = sorted(i for i, label in labels.items() if label.lower() in _NSFW_LABELS)
        if not self._nsfw_ids:
            raise ModelUnavailable(model=name, reason=f"none of its labels {sorted(labels.values())} means NSFW")
        self._model = model.to(device).eval()
        self._processor = processor
        self._device = device
        self.name = name
        self.labels = labels

    @classmethod
    def from_pretrained(cls, name_or_dir: str | os.PathLike[str], *, device: str = "cpu") -> TransformersNsfwGuard:
        """Load from the hub or a local folder; any failure becomes `ModelUnavailable` with the reason."""
        from transformers import AutoImageProcessor, AutoModelForImageClassification

        name = str(name_or_dir)
        try:
            model = AutoModelForImageClassification.from_pretrained(name)
            processor = AutoImageProcessor.from_pretrained(name, backend="pil")  # type: ignore[no-untyped-call]
        except (OSError, ValueError, KeyError) as exc:
            reason = f"{type(exc).__name__}: {exc}".splitlines()[0]
            if "connect" in reason.lower() or "offline" in reason.lower():
                reason += " (no network: download it once, or set nsfw_model to a local folder)"
            raise ModelUnavailable(model=name, reason=reason) from exc
        return cls(model, processor, name=name, device=device)

    def score(self, images: Sequence[Image.Image]) -> list[float]:
        import torch

        if not images:
            return []
        inputs = self._processor(images=[img.convert("RGB") for img in images], return_tensors="pt")
        with torch.inference_mode():
            logits = self._model(**{k: v.to(self._device) for k, v in inputs.items()}).logits
            probs = logits.float().softmax(dim=-1)[:, self._nsfw_ids].sum(dim=-1)
        return [min(1.0, max(0.0, float(p))) for p in probs.cpu()]


class NudeNetGuard:
    """NudeNet's 320n ONNX detector (CPU, onnxruntime). Optional: `pip install nudenet`."""

    name = "nudenet"

    def __init__(self) -> None:
        try:
            from nudenet import NudeDetector
        except ImportError as exc:
            raise ConfigError(
                message="nsfw_backend = 'nudenet' needs the nudenet package: pip install nudenet "
                "(mind its AGPL-3.0 licence, see docs/safety.md), or use nsfw_backend = 'transformers'"
            ) from exc
        self._detector = NudeDetector()

    def detections(self, image: Image.Image) -> list[dict[str, Any]]:
        """NudeNet's raw detections (`class`, `score`, `box`) for one image."""
        buf = io.BytesIO()
        image.convert("RGB").save(buf, format="PNG")  # encoded bytes: the input type nudenet decodes itself
        return list(self._detector.detect(buf.getvalue()))

    def score(self, images: Sequence[Image.Image]) -> list[float]:
        scores = []
        for img in images:
            exposed = [float(d["score"]) for d in self.detections(img) if d.get("class") in NUDENET_EXPOSED]
            scores.append(max(exposed, default=0.0))
        return scores


def build_tiny_nsfw_classifier(data_dir: Path) -> Path:
    """A tiny random ViT classifier {0: normal, 1: nsfw} saved under `data_dir` (built once, offline)."""
    target = Path(data_dir) / _TINY_DIR
    if (target / "config.json").is_file() and (target / "preprocessor_config.json").is_file():
        return target
    import torch
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessorPil

    config = ViTConfig(
        image_size=32,
        patch_size=8,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
        id2label={0: "normal", 1: "nsfw"},
        label2id={"normal": 0, "nsfw": 1},
    )
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(0)
    try:
        model = ViTForImageClassification(config)
        # Random weights, but a calm verdict: "normal" dominates, so the tiny playground shows its images.
        # Tests that need flagged images lower `nsfw_threshold` or pass a guard they control.
        with torch.no_grad():
            model.classifier.bias.copy_(torch.tensor([4.0, -4.0]))  # type: ignore[operator]  # a Linear's bias
    finally:
        torch.random.set_rng_state(generator_state)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=".tiny-nsfw-"))
    try:
        model.save_pretrained(staging)
        ViTImageProcessorPil(size={"height": 32, "width": 32}).save_pretrained(staging)
        try:
            staging.rename(target)
        except OSError:
            if not (target / "config.json").is_file():  # not a concurrent build that won the race
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def load_nsfw_guard(settings: Settings) -> NsfwGuard:
    """The guard `settings` asks for; raises `ModelUnavailable` / `ConfigError` with a clear reason."""
    if settings.nsfw_backend == "off":
        return OffGuard()
    if settings.nsfw_backend == "nudenet":
        return NudeNetGuard()
    if settings.model.startswith("tiny"):
        return TransformersNsfwGuard.from_pretrained(build_tiny_nsfw_classifier(settings.data_dir), device="cpu")
    return TransformersNsfwGuard.from_pretrained(settings.nsfw_model, device=_device(settings))


def _device(settings: Settings) -> str:
    if settings.device != "auto":
        return settings.device
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if torch.backends.mps.is_available():
        return "mps"
    return "cpu"
