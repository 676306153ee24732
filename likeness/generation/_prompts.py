"""Prompt rendering and fusion: each preset part is encoded alone, then the embeddings are blended.

Fusion rule (deterministic): for parts with weights w₁..wₙ (summing to 1), every embedding the
pipeline takes — prompt, negative prompt and, for SDXL, both pooled vectors — is Σ wᵢ·Eᵢ of the
parts' own encodings. A single part has weight 1, so it equals plain prompt encoding.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from likeness.presets import EffectivePreset

__all__ = ["SUBJECT", "PromptEmbeds", "encode_parts", "render_parts"]

# What `{subject}` becomes in preset templates: the identity itself comes from the selfie.
SUBJECT = "a portrait of the person"


@dataclass(frozen=True)
class PromptEmbeds:
    """Embeddings for one request; negatives are None without classifier-free guidance, pooled ones for SD1.5."""

    prompt: torch.Tensor
    negative: torch.Tensor | None
    pooled: torch.Tensor | None
    negative_pooled: torch.Tensor | None

    def repeat(self, n: int) -> PromptEmbeds:
        """The same embeddings for `n` images (one per seed)."""
        return PromptEmbeds(
            _repeat(self.prompt, n),
            _repeat(self.negative, n),
            _repeat(self.pooled, n),
            _repeat(self.negative_pooled, n),
        )

    @staticmethod
    def cat(parts: list[PromptEmbeds]) -> PromptEmbeds:
        """Stack several requests' embeddings into one batch."""
        return PromptEmbeds(
            torch.cat([p.prompt for p in parts]),
            _cat([p.negative for p in parts]),
            _cat([p.pooled for p in parts]),
            _cat([p.negative_pooled for p in parts]),
        )

    def pipeline_kwargs(self, family: str) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"prompt_embeds": self.prompt, "negative_prompt_embeds": self.negative}
        if family == "sdxl":
            kwargs["pooled_prompt_embeds"] = self.pooled
            kwargs["negative_pooled_prompt_embeds"] = self.negative_pooled
        return kwargs


def render_parts(preset: EffectivePreset, user_prompt: str, framing: str) -> list[tuple[float, str, str]]:
    """(weight, prompt, negative prompt) per preset part, for the person in the selfie."""
    return preset.render(SUBJECT, user_prompt, framing)


def encode_parts(
    pipe: Any, family: str, parts: list[tuple[float, str, str]], device: torch.device, guidance: bool
) -> PromptEmbeds:
    """Encode each part with the pipeline's own `encode_prompt` and blend them by weight."""
    sums: list[torch.Tensor | None] = [None, None, None, None]
    for weight, prompt, negative in parts:
        if family == "sdxl":
            encoded = pipe.encode_prompt(
                prompt,
                device=device,
                num_images_per_prompt=1,
                do_classifier_free_guidance=guidance,
                negative_prompt=negative,
            )
        else:
            embeds, negative_embeds = pipe.encode_prompt(prompt, device, 1, guidance, negative_prompt=negative)
            encoded = (embeds, negative_embeds, None, None)
        for i, tensor in enumerate(encoded):
            current = sums[i]
            if tensor is not None:
                sums[i] = tensor * weight if current is None else current + tensor * weight
    if sums[0] is None:
        raise ValueError("a preset needs at least one prompt part")
    return PromptEmbeds(sums[0], sums[1], sums[2], sums[3])


def _repeat(tensor: torch.Tensor | None, n: int) -> Any:
    return None if tensor is None else tensor.repeat(n, *([1] * (tensor.dim() - 1)))


def _cat(tensors: list[torch.Tensor | None]) -> torch.Tensor | None:
    present = [t for t in tensors if t is not None]
    return torch.cat(present) if present else None
