"""Text-prompted segmentation with CLIPSeg: "hair" + image → a probability per pixel.

Production uses `CIDAS/clipseg-rd64-refined`. Model keys starting with `tiny` get a tiny CLIPSeg with
seeded random weights, built from configs once under `data_dir` and loaded through the same
`from_pretrained` path (its masks are noise: tests of edit pixels inject known masks instead).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from likeness.errors import ModelUnavailable

__all__ = ["CLIPSEG_MODEL", "TextMasker", "ensure_tiny_clipseg"]

CLIPSEG_MODEL = "CIDAS/clipseg-rd64-refined"
_TINY_VERSION = 1
_TINY_IMAGE = 64  # tiny vision tower input side (patch 16 → 4×4 patches)


class TextMasker:
    """A loaded CLIPSeg: `masker(image, ["hair"])` → float32 (H, W) probabilities in [0, 1].

    Several queries are combined by their per-pixel maximum (the union of the regions they name).
    Not thread-safe; the engine calls it from its one generation thread.
    """

    def __init__(self, model: Any, processor: Any, device: torch.device | str = "cpu") -> None:
        self.model = model
        self.processor = processor
        self.device = torch.device(device)

    @classmethod
    def load(cls, model_key: str, data_dir: Path, device: torch.device | str = "cpu") -> TextMasker:
        """Load CLIPSeg for engine model `model_key` (`tiny*` → the offline tiny build); `ModelUnavailable` if not."""
        from transformers import CLIPSegForImageSegmentation, CLIPSegProcessor

        source = str(ensure_tiny_clipseg(data_dir)) if model_key.startswith("tiny") else CLIPSEG_MODEL
        try:
            processor = CLIPSegProcessor.from_pretrained(source)
            model = CLIPSegForImageSegmentation.from_pretrained(source)
        except (OSError, ValueError) as exc:
            raise ModelUnavailable(model=source, reason=f"segmentation model: {exc}") from exc
        # float32 always: CLIPSeg is small, and half precision makes thresholds flaky.
        model = model.float().to(torch.device(device)).eval()  # type: ignore[no-untyped-call]
        return cls(model, processor, device)

    @torch.inference_mode()
    def __call__(self, image: Image.Image, queries: Sequence[str]) -> np.ndarray:
        if not queries:
            raise ValueError("at least one segmentation query is needed")
        rgb = image.convert("RGB")
        inputs = self.processor(text=list(queries), images=[rgb] * len(queries), padding=True, return_tensors="pt").to(
            self.device
        )
        logits = self.model(**inputs).logits  # (Q, h, w), or (h, w) when Q == 1
        if logits.ndim == 2:
            logits = logits[None]
        probs = torch.sigmoid(logits.float())[:, None]  # (Q, 1, h, w)
        resized = torch.nn.functional.interpolate(probs, size=(rgb.height, rgb.width), mode="bilinear")
        return resized.amax(dim=0)[0].clamp(0, 1).cpu().numpy().astype(np.float32)


def ensure_tiny_clipseg(data_dir: Path) -> Path:
    """Build (once) and return the folder of the tiny CLIPSeg (model + processor) under `data_dir`.

    Built in a temporary sibling and renamed into place, so a crash or a race never leaves half a model.
    """
    root = data_dir / "models" / f"tiny-clipseg-v{_TINY_VERSION}"
    if (root / "config.json").is_file():
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}-", dir=root.parent))
    try:
        _build_tiny(tmp)
        try:
            os.rename(tmp, root)
        except OSError:
            if not (root / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root


def _build_tiny(folder: Path) -> None:
    from transformers import (
        CLIPSegConfig,
        CLIPSegForImageSegmentation,
        CLIPSegProcessor,
        CLIPTokenizer,
        ViTImageProcessor,
    )

    _write_vocab(folder / "tokenizer-src")
    tokenizer = CLIPTokenizer.from_pretrained(str(folder / "tokenizer-src"), model_max_length=77)
    config = CLIPSegConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": 32,
            "intermediate_size": 37,
            "num_hidden_layers": 3,
            "num_attention_heads": 4,
            "max_position_embeddings": 77,
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 37,
            "num_hidden_layers": 3,
            "num_attention_heads": 4,
            "image_size": _TINY_IMAGE,
            "patch_size": 16,
        },
        projection_dim=32,
        extract_layers=(1, 2),
        reduce_dim=16,
        decoder_num_attention_heads=2,
        decoder_intermediate_size=37,
    )
    torch.manual_seed(0)
    model = CLIPSegForImageSegmentation(config)
    image_processor = ViTImageProcessor(
        do_resize=True,
        size={"height": _TINY_IMAGE, "width": _TINY_IMAGE},
        image_mean=[0.485, 0.456, 0.406],
        image_std=[0.229, 0.224, 0.225],
    )
    processor = CLIPSegProcessor(image_processor=image_processor, tokenizer=tokenizer)  # type: ignore[no-untyped-call]
    processor.save_pretrained(str(folder))
    model.save_pretrained(str(folder))
    shutil.rmtree(folder / "tokenizer-src")


def _write_vocab(folder: Path) -> None:
    """Byte-level CLIP BPE vocab + merges (FIELD-NOTES: constructing CLIPTokenizer from files ignores them)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    alphabet = [chr(b) for b in printable] + [chr(256 + i) for i in range(256 - len(printable))]
    vocab: dict[str, int] = {}
    for char in alphabet:
        vocab[char] = len(vocab)
    for char in alphabet:
        vocab[char + "</w>"] = len(vocab)
    merges = [("h", "a"), ("ha", "i"), ("hai", "r</w>"), ("s", "k"), ("sk", "y</w>"), ("e", "y")]
    for left, right in merges:
        vocab.setdefault(left + right, len(vocab))
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    folder.mkdir(parents=True)
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    lines = ["#version: 0.2", *(f"{left} {right}" for left, right in merges)]
    (folder / "merges.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
