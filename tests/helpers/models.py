"""A model spec whose weights are local folders (no network), for `doctor` and `models pull` tests."""

from __future__ import annotations

from pathlib import Path

CHECKPOINT_FILES = ("model_index.json", "unet/config.json", "unet/diffusion_pytorch_model.safetensors")
ENCODER_FILES = ("models/image_encoder/config.json", "models/image_encoder/model.safetensors")
ADAPTER_FILE = "models/ip.safetensors"


def local_model_toml(root: Path, *, with_adapter: bool = True) -> Path:
    """`root/models.toml` defining `mine`: SD1.5 with checkpoint, adapter and encoder under `root/weights`."""
    ckpt, adapter = root / "weights" / "ckpt", root / "weights" / "adapter"
    files = [ckpt / rel for rel in CHECKPOINT_FILES] + [adapter / rel for rel in ENCODER_FILES]
    if with_adapter:
        files.append(adapter / ADAPTER_FILE)
    for path in files:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("{}")
    toml = root / "models.toml"
    toml.write_text(
        f"""[models.mine]
family = "sd15"
checkpoint = "{ckpt}"
base = 512
identity_adapter = {{ repo = "{adapter}", subfolder = "models", weight_name = "ip.safetensors" }}
image_encoder = {{ repo = "{adapter}", subfolder = "models/image_encoder" }}
"""
    )
    return toml
