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

        def rep(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.repeat(n, *([1] * (t.dim() - 1)))

        return PromptEmbeds(rep(self.prompt), rep(self.negative), rep(self.pooled), rep(self.negative_pooled))  # type: ignore[arg-type]

    @staticmethod
    def cat(parts: list[PromptEmbeds]) -> PromptEmbeds:
        """Stack several requests' embeddings into one batch."""

        def cat(ts: list[torch.Tensor | None]) -> torch.Tensor | None:
            return None if ts[0] is None else torch.cat(ts, dim=0)  # type: ignore[arg-type]

        return PromptEmbeds(
            cat([p.prompt for p in parts]),  # type: ignore[arg-type]
            cat([p.negative for p in parts]),
            cat([p.pooled for p in parts]),
            cat([p.negative_pooled for p in parts]),
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
    total: list[torch.Tensor | None] = [None, None, None, None]
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
            if tensor is not None:
                total[i] = tensor * weight if total[i] is None else total[i] + tensor * weight  # type: ignore[operator]
    assert total[0] is not None
    return PromptEmbeds(total[0], total[1], total[2], total[3])
