"""The engine seam: what a worker hands a model family and gets back, and the `Engine` protocol every family
implements (today `StableDiffusionEngine`: SD 1.5 / SDXL with IP-Adapter; the tests' fake engine too).

No torch here: requests hold PIL images and resolved presets, results PIL images and a JSON-able record.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from PIL import Image

from likeness.presets import EffectivePreset, PresetCatalog
from likeness.requests import EditInstruction

__all__ = ["EditRequest", "Engine", "GenerationResult", "PortraitRequest", "ProgressFn"]

ProgressFn = Callable[[int, int], None]
"""`(step, total_steps)`, called from the generating thread after each denoising step."""


@dataclass
class PortraitRequest:
    """One portrait job: a validated RGB selfie, a resolved preset, and the user's choices."""

    selfie: Image.Image
    preset: EffectivePreset
    prompt: str = ""
    format: str | None = None
    seeds: tuple[int, ...] = (0,)
    identity_scale: float | None = None
    best_of: int | None = None
    """Candidates per returned image; None: the preset's `best_of`, else `settings.best_of`."""


@dataclass
class EditRequest:
    """One edit of `source` (a previous result): what to change, whose face, in which style.

    `instruction` comes from `likeness.requests.parse_instruction` (with `has_mask=True` when `mask` is
    given). `mask` is the user's mask image (white = change), same aspect ratio as `source`. `strength`
    overrides the instruction's hint. Each seed gives one image.
    """

    source: Image.Image
    selfie: Image.Image
    instruction: EditInstruction
    preset: EffectivePreset
    mask: Image.Image | None = None
    seeds: tuple[int, ...] = (0,)
    identity_scale: float | None = None
    strength: float | None = None


@dataclass
class GenerationResult:
    """Images (one per seed, in order), the seeds that made them, and a JSON-able record of how.

    The record's `likeness_scores` and `notices` are read by the worker; the rest (`model`, prompts, sizes,
    steps, identity strengths, LoRAs, best-of candidates) is kept as the result's details.
    """

    images: list[Image.Image]
    seeds: list[int]
    metadata: dict[str, Any] = field(default_factory=dict)


class Engine(Protocol):
    """A model family as the worker uses it: loaded once, one call at a time (from one thread)."""

    model_key: str
    presets: PresetCatalog

    def batch_key(self, request: PortraitRequest) -> Hashable:
        """Requests with equal keys may be served by one `portrait_batch` call."""
        ...

    def portrait_batch(
        self, requests: list[PortraitRequest], progress: Sequence[ProgressFn | None] | None = None
    ) -> list[GenerationResult]:
        """One result per request, each as if made alone; each request keeps its own selfie and seeds."""
        ...

    def edit(self, request: EditRequest, progress: ProgressFn | None = None) -> GenerationResult:
        """Apply an edit instruction to a previous result."""
        ...

    def variation(
        self,
        source: Image.Image,
        selfie: Image.Image,
        preset: EffectivePreset,
        seeds: tuple[int, ...] = (0,),
        strength: float = ...,
        progress: ProgressFn | None = None,
        *,
        prompt: str = "",
        identity_scale: float | None = None,
    ) -> GenerationResult:
        """Variations of a result, one image per seed."""
        ...

    def close(self) -> None:
        """Free the model; the engine can't generate afterwards."""
        ...
