"""Built-in tiny models: real diffusers/transformers classes with small seeded random weights.

They let tests, CI and `LIKENESS_MODEL=tiny` run the whole engine offline on a CPU in about a second.
Everything is written to disk once (checkpoint, IP-Adapter plus-face and FaceID-Plus-v2 in the h94
layouts, style LoRAs) and then loaded through exactly the code path real weights take (`from_pretrained`,
`load_ip_adapter`, `load_lora_weights`). Outputs are noise-like pictures: useful for shapes, determinism and plumbing.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

__all__ = ["TINY_VERSION", "ensure_tiny_lora", "ensure_tiny_model", "tiny_lora_dir"]

# Bump when anything below changes the weights or the layout: the folder name carries it, so an old
# cache is simply ignored.
TINY_VERSION = 2
LORA_RANK = 4
LORA_FILE = "pytorch_lora_weights.safetensors"
ADAPTER_SUBFOLDER = "models"
ADAPTER_FILE = "ip-adapter-plus-face_tiny.safetensors"
FACEID_ADAPTER_FILE = "ip-adapter-faceid-plusv2_tiny.safetensors"
ENCODER_SUBFOLDER = "models/image_encoder"
FACEID_EMBEDDING_DIM = 512
"""ArcFace embedding size the FaceID adapter takes (insightface buffalo_l), kept real in the tiny model."""

_TEXT_HIDDEN = 32
_IMAGE_HIDDEN = 32


def tiny_root(data_dir: Path, family: str) -> Path:
    """Cache folder of one tiny model family; the name changes whenever the weights would."""
    digest = hashlib.sha256(f"{family}:{TINY_VERSION}:{torch.__version__.split('+')[0]}".encode()).hexdigest()[:10]
    return data_dir / "models" / f"tiny-{family}-{digest}"


def ensure_tiny_model(data_dir: Path, family: str, lora_sources: list[str]) -> Path:
    """Build (once) and return the folder holding the tiny checkpoint, adapter and LoRAs of `family`.

    The folder is built in a temporary sibling and renamed into place, so a crash never leaves a
    half-written cache and two processes racing both end up with one complete copy.
    """
    root = tiny_root(data_dir, family)
    if not (root / "checkpoint" / "model_index.json").is_file():
        root.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}-", dir=root.parent))
        try:
            _build(tmp, family)
            try:
                os.rename(tmp, root)
            except OSError:
                if not (root / "checkpoint" / "model_index.json").is_file():
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    for source in lora_sources:
        ensure_tiny_lora(root, source)
    return root


def tiny_lora_dir(root: Path, source: str) -> Path:
    """Folder of the tiny LoRA standing in for `source` (any hub id or path)."""
    return root / "loras" / hashlib.sha256(source.encode()).hexdigest()[:16]


def ensure_tiny_lora(root: Path, source: str) -> Path:
    """Write (once) the deterministic tiny LoRA for `source` and return its folder."""
    folder = tiny_lora_dir(root, source)
    if (folder / LORA_FILE).is_file():
        return folder
    from diffusers import UNet2DConditionModel
    from safetensors.torch import save_file

    config = json.loads((root / "checkpoint" / "unet" / "config.json").read_text())
    config = {k: v for k, v in config.items() if not k.startswith("_")}
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(config)
    generator = torch.Generator().manual_seed(int(hashlib.sha256(source.encode()).hexdigest()[:8], 16))
    state: dict[str, torch.Tensor] = {}
    for name, module in unet.named_modules():
        if not name.endswith(("attn1", "attn2")):
            continue
        for proj in ("to_q", "to_k", "to_v", "to_out.0"):
            linear = module.get_submodule(proj)
            # Large enough that a style LoRA visibly changes the tiny model's output.
            down = torch.randn(LORA_RANK, linear.in_features, generator=generator) * 0.3
            up = torch.randn(linear.out_features, LORA_RANK, generator=generator) * 0.3
            state[f"unet.{name}.{proj}.lora_A.weight"] = down
            state[f"unet.{name}.{proj}.lora_B.weight"] = up
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        save_file(state, str(tmp / LORA_FILE), metadata={"format": "pt", "source": source})
        try:
            os.rename(tmp, folder)
        except OSError:
            if not (folder / LORA_FILE).is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def _build(root: Path, family: str) -> None:
    torch.manual_seed(0)
    tokenizer = _write_tokenizer(root / "tokenizer-src")
    text_config = _text_config(tokenizer)
    if family == "sdxl":
        pipe = _sdxl(text_config, tokenizer)
        cross_attention_dim = 2 * _TEXT_HIDDEN
    elif family == "sd15":
        pipe = _sd15(text_config, tokenizer)
        cross_attention_dim = _TEXT_HIDDEN
    else:
        raise ValueError(f"no tiny model for family {family!r}")
    pipe.save_pretrained(root / "checkpoint")
    shutil.rmtree(root / "tokenizer-src")
    _write_ip_adapter(root / "ip-adapter", pipe.unet, cross_attention_dim)
    _write_faceid_adapter(root / "ip-adapter", pipe.unet, cross_attention_dim)


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP byte-level alphabet: every byte maps to a printable character."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in chars), strict=True))


def _write_tokenizer(folder: Path) -> Any:
    """A byte-level CLIP BPE tokenizer with a few merges (FIELD-NOTES: only `from_pretrained` works)."""
    from transformers import CLIPTokenizer

    folder.mkdir(parents=True)
    alphabet = list(_bytes_to_unicode().values())
    vocab: dict[str, int] = {}
    for char in alphabet:
        vocab[char] = len(vocab)
    for char in alphabet:
        vocab[char + "</w>"] = len(vocab)
    merges = [("t", "h"), ("th", "e</w>"), ("o", "n</w>"), ("a", "n"), ("e", "r</w>"), ("i", "n")]
    for left, right in merges:
        vocab.setdefault(left + right, len(vocab))
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    lines = ["#version: 0.2", *(f"{left} {right}" for left, right in merges)]
    (folder / "merges.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return CLIPTokenizer.from_pretrained(str(folder), model_max_length=77)


def _text_config(tokenizer: Any) -> Any:
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        hidden_size=_TEXT_HIDDEN,
        intermediate_size=37,
        layer_norm_eps=1e-05,
        num_attention_heads=4,
        num_hidden_layers=3,
        vocab_size=len(tokenizer),
        projection_dim=_TEXT_HIDDEN,
        hidden_act="gelu",
        max_position_embeddings=77,
    )


def _vae() -> Any:
    from diffusers import AutoencoderKL

    # Four blocks, like real SD: the latent is 8× smaller than the image.
    return AutoencoderKL(
        block_out_channels=(8, 16, 16, 16),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4,
        norm_num_groups=8,
        layers_per_block=1,
        sample_size=64,
    )


def _sdxl(text_config: Any, tokenizer: Any) -> Any:
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=2,
        sample_size=8,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 2),
        projection_class_embeddings_input_dim=6 * 8 + _TEXT_HIDDEN,
        cross_attention_dim=2 * _TEXT_HIDDEN,
        norm_num_groups=1,
    )
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        timestep_spacing="leading",
        steps_offset=1,
    )
    return StableDiffusionXLPipeline(
        vae=_vae(),
        text_encoder=CLIPTextModel(text_config),
        text_encoder_2=CLIPTextModelWithProjection(text_config),
        tokenizer=tokenizer,
        tokenizer_2=tokenizer,
        unet=unet,
        scheduler=scheduler,
        image_encoder=None,
        feature_extractor=None,
    )


def _sd15(text_config: Any, tokenizer: Any) -> Any:
    from diffusers import PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel

    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=2,
        sample_size=8,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=_TEXT_HIDDEN,
        norm_num_groups=2,
    )
    scheduler = PNDMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", skip_prk_steps=True, steps_offset=1
    )
    return StableDiffusionPipeline(
        vae=_vae(),
        text_encoder=CLIPTextModel(text_config),
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        image_encoder=None,
        requires_safety_checker=False,
    )


def _write_ip_adapter(folder: Path, unet: Any, cross_attention_dim: int) -> None:
    """A CLIP vision encoder and IP-Adapter plus(-face) weights in h94/IP-Adapter's layout."""
    from diffusers.models.embeddings import IPAdapterPlusImageProjection
    from safetensors.torch import save_file
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    encoder = CLIPVisionModelWithProjection(
        CLIPVisionConfig(
            hidden_size=_IMAGE_HIDDEN,
            projection_dim=_IMAGE_HIDDEN,
            num_hidden_layers=3,
            num_attention_heads=4,
            intermediate_size=37,
            image_size=32,
            patch_size=8,
        )
    )
    encoder.save_pretrained(folder / ENCODER_SUBFOLDER)

    # diffusers reads `heads = to_q rows // 64`, so dim_head stays 64 even in a tiny Resampler.
    resampler = IPAdapterPlusImageProjection(
        embed_dims=_IMAGE_HIDDEN, output_dims=cross_attention_dim, hidden_dims=32, heads=1, dim_head=64, num_queries=4
    )
    weights = resampler.state_dict()
    state: dict[str, torch.Tensor] = {}
    for key, value in weights.items():
        if ".attn.to_k." in key or ".attn.to_v." in key:
            continue  # h94 keeps key and value projections in one `to_kv` matrix
        state[f"image_proj.{_h94_resampler_key(key)}"] = value
    for index in range(len(resampler.layers)):
        k, v = weights[f"layers.{index}.attn.to_k.weight"], weights[f"layers.{index}.attn.to_v.weight"]
        state[f"image_proj.layers.{index}.0.to_kv.weight"] = torch.cat([k, v], dim=0)
    state.update(_ip_attention_weights(unet, cross_attention_dim))
    (folder / ADAPTER_SUBFOLDER).mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(folder / ADAPTER_SUBFOLDER / ADAPTER_FILE))


def _ip_attention_weights(unet: Any, cross_attention_dim: int) -> dict[str, torch.Tensor]:
    """One to_k_ip/to_v_ip pair per attention processor, numbered like h94: cross-attention ones are odd."""
    state: dict[str, torch.Tensor] = {}
    key_id = 1
    for name in unet.attn_processors:
        if name.endswith("attn1.processor"):
            continue
        hidden = unet.get_submodule(name.removesuffix(".processor")).to_k.out_features
        for proj in ("to_k_ip", "to_v_ip"):
            state[f"ip_adapter.{key_id}.{proj}.weight"] = torch.randn(hidden, cross_attention_dim) * 0.3
        key_id += 2
    return state


def _write_faceid_adapter(folder: Path, unet: Any, cross_attention_dim: int) -> None:
    """IP-Adapter FaceID-Plus-v2 weights in h94/IP-Adapter-FaceID's layout, with the LoRA it ships.

    `image_proj`: the ID projection (`proj`, `norm`) and the face Resampler (`perceiver_resampler.*`) that
    reads the CLIP hidden states of the face crop. `ip_adapter`: the to_k_ip/to_v_ip pairs, and a LoRA on
    every attention processor (`<index>.to_{q,k,v,out}_lora.{down,up}`, numbered over all processors) that
    diffusers' `load_ip_adapter` loads as adapter `faceid_0`.
    """
    from diffusers.models.embeddings import IPAdapterFaceIDPlusImageProjection
    from safetensors.torch import save_file

    # `shortcut` (v2) adds the ID tokens to the output: their width must be the UNet's cross-attention width.
    projection = IPAdapterFaceIDPlusImageProjection(
        embed_dims=cross_attention_dim,
        output_dims=cross_attention_dim,
        hidden_dims=_IMAGE_HIDDEN,
        id_embeddings_dim=FACEID_EMBEDDING_DIM,
        heads=1,  # diffusers reads `heads = to_q rows // 64`
    )
    weights = projection.state_dict()
    state: dict[str, torch.Tensor] = {}
    for key, value in weights.items():
        if key.startswith("proj.net."):  # FeedForward names → h94's Sequential indices
            state["image_proj." + key.replace("proj.net.0.proj.", "proj.0.").replace("proj.net.2.", "proj.2.")] = value
        elif key.startswith("norm."):
            state[f"image_proj.{key}"] = value
        elif ".attn.to_k." not in key and ".attn.to_v." not in key:
            state[f"image_proj.perceiver_resampler.{_h94_resampler_key(key)}"] = value
    for index in range(len(projection.layers)):
        k, v = weights[f"layers.{index}.attn.to_k.weight"], weights[f"layers.{index}.attn.to_v.weight"]
        state[f"image_proj.perceiver_resampler.layers.{index}.0.to_kv.weight"] = torch.cat([k, v], dim=0)
    state.update(_ip_attention_weights(unet, cross_attention_dim))
    for key_id, name in enumerate(unet.attn_processors):
        attn = unet.get_submodule(name.removesuffix(".processor"))
        for proj, linear in (("to_q", attn.to_q), ("to_k", attn.to_k), ("to_v", attn.to_v), ("to_out", attn.to_out[0])):
            state[f"ip_adapter.{key_id}.{proj}_lora.down.weight"] = torch.randn(LORA_RANK, linear.in_features) * 0.3
            state[f"ip_adapter.{key_id}.{proj}_lora.up.weight"] = torch.randn(linear.out_features, LORA_RANK) * 0.3
    (folder / ADAPTER_SUBFOLDER).mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(folder / ADAPTER_SUBFOLDER / FACEID_ADAPTER_FILE))


def _h94_resampler_key(key: str) -> str:
    """diffusers' Resampler names → the original IP-Adapter names (inverse of diffusers' converter)."""
    parts = key.split(".")
    if parts[0] != "layers":
        return key
    index, rest = parts[1], ".".join(parts[2:])
    renames = {
        "ln0.weight": "0.norm1.weight",
        "ln0.bias": "0.norm1.bias",
        "ln1.weight": "0.norm2.weight",
        "ln1.bias": "0.norm2.bias",
        "attn.to_q.weight": "0.to_q.weight",
        "attn.to_out.0.weight": "0.to_out.weight",
        "ff.0.weight": "1.0.weight",
        "ff.0.bias": "1.0.bias",
        "ff.1.net.0.proj.weight": "1.1.weight",
        "ff.1.net.2.weight": "1.3.weight",
    }
    return f"layers.{index}.{renames[rest]}"
