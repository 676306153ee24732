"""From a selfie to what the identity adapter sees: the face analysis, its aligned crop, the adapter's embeddings.

Every path (portraits alone or batched, best-of-N, edits, variations) goes through `SelfieFaces.analyze`
and `identity_embeds`, so each selfie is analysed once and each adapter kind is fed in one place.

Two adapter kinds (`IdentityAdapter.kind`):

- `plus-face` (IP-Adapter plus-face): CLIP hidden states of the aligned face crop → a Resampler.
- `faceid-plus-v2` (IP-Adapter FaceID-Plus-v2): the ArcFace embedding of the face is what the call takes
  (`ip_adapter_image_embeds`), the crop's CLIP hidden states go on the projection layer's `clip_embeds`,
  with `shortcut` on (the "v2" part: the ID tokens are added back to the Resampler's output).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from PIL import Image

from likeness.generation._faces import FaceAnalysis, FaceAnalyzer

__all__ = ["FACEID_SHORTCUT_SCALE", "SelfieFaces", "identity_embeds", "identity_image", "identity_metadata"]

FACEID_SHORTCUT_SCALE = 1.0
"""FaceID-Plus-v2's `s_scale`: weight of the CLIP (structure) tokens added to the ID tokens. The reference
recipe uses 1.0; lower keeps more of the prompt's freedom, higher copies more of the selfie's face shape."""


def identity_image(selfie: Image.Image, analyzer: FaceAnalyzer) -> Image.Image:
    """The aligned, square face crop of `selfie` (with margin for hair and chin).

    Raises `NoFace` or `FaceTooSmall` (user errors) when the selfie has no usable face.
    """
    return analyzer.analyze(selfie).crop


class SelfieFaces:
    """Face analyses of recent selfies, by pixel content, so a selfie is analysed once.

    A job's portrait, the edits replying to it and its variations decode the same upload into new image
    objects: keying by content (a hash of the pixels, ~10 ms for 12 MP) rather than object identity
    lets them share one analysis. Errors (`NoFace`, `FaceTooSmall`) are not cached. Not thread-safe, like
    the engine that owns it.
    """

    def __init__(self, analyzer: FaceAnalyzer, capacity: int = 16) -> None:
        self.analyzer = analyzer
        self.capacity = capacity
        self._cache: OrderedDict[str, FaceAnalysis] = OrderedDict()
        self.analyses = 0  # how many selfies were actually analysed (tests and metrics)

    def analyze(self, selfie: Image.Image) -> FaceAnalysis:
        """The analysis of `selfie` (cached); raises `NoFace` / `FaceTooSmall`."""
        key = _digest(selfie)
        found = self._cache.get(key)
        if found is not None:
            self._cache.move_to_end(key)
            return found
        analysis = self.analyzer.analyze(selfie)
        self.analyses += 1
        self._cache[key] = analysis
        while len(self._cache) > self.capacity:
            self._cache.popitem(last=False)
        return analysis


def identity_metadata(analysis: FaceAnalysis, scores: Sequence[float | None]) -> dict[str, Any]:
    """Result metadata about the face: one likeness score per image (None: no face in it), notices for the user."""
    return {
        "likeness_scores": [None if score is None else round(score, 1) for score in scores],
        "likeness_backend": analysis.face.backend,
        "faces_found": analysis.faces_found,
        "notices": list(analysis.notices),
    }


def _digest(image: Image.Image) -> str:
    digest = hashlib.blake2b(f"{image.mode}:{image.width}x{image.height}:".encode(), digest_size=16)
    digest.update(image.tobytes())
    return digest.hexdigest()


@contextmanager
def identity_embeds(
    pipe: Any, kind: str, faces: Sequence[FaceAnalysis], device: torch.device, guided: bool
) -> Iterator[list[torch.Tensor]]:
    """The `ip_adapter_image_embeds` for a call making one image per entry of `faces` (in that order).

    Laid out as diffusers' batch is, `[negatives of all images, positives of all images]` under
    classifier-free guidance. Inside the block the pipeline uses them exactly as given: its
    `prepare_ip_adapter_image_embeds` would repeat them `batch_size` times, right for one face and wrong for
    a batch of different faces (diffusers #9813, every prompt would see every face). For FaceID the crops'
    CLIP embeddings are set on the projection layer for the block's duration.
    """
    negatives: dict[int, torch.Tensor] = {}  # id(analysis) -> CLIP embeddings of the blank image
    positives: dict[int, torch.Tensor] = {}  # id(analysis) -> CLIP embeddings of its crop
    for analysis in faces:
        if id(analysis) not in positives:
            clip = pipe.prepare_ip_adapter_image_embeds([analysis.crop], None, device, 1, guided)[0]
            if guided:
                negatives[id(analysis)], positives[id(analysis)] = clip.chunk(2)
            else:
                positives[id(analysis)] = clip
    order = [id(a) for a in faces]
    clip_embeds = torch.cat([*(negatives[i] for i in order if guided), *(positives[i] for i in order)], dim=0)
    projection = None
    if kind == "faceid-plus-v2":
        dtype = clip_embeds.dtype
        ids = [torch.tensor(a.face.embedding, dtype=dtype, device=device).view(1, 1, -1) for a in faces]
        # The reference recipe's unconditional ID embedding is zeros.
        embeds = torch.cat([*(torch.zeros_like(i) for i in ids), *ids] if guided else ids, dim=0)
        projection = pipe.unet.encoder_hid_proj.image_projection_layers[0]
        projection.clip_embeds = clip_embeds
        projection.shortcut = True
        projection.shortcut_scale = FACEID_SHORTCUT_SCALE
    else:
        embeds = clip_embeds
    pipe.prepare_ip_adapter_image_embeds = lambda *args, **kwargs: [embeds]
    try:
        yield [embeds]
    finally:
        del pipe.prepare_ip_adapter_image_embeds
        if projection is not None:
            projection.clip_embeds = None  # don't keep a batch of activations alive between calls
