"""Run in a fresh process by `benchmarks.memory`: load the engine like a worker, run each pipeline, print JSON.

`python -m benchmarks._memory_probe DATA_DIR` — RSS after each stage, the peak (VmHWM), and whether the
img2img/inpaint pipelines use the very same weight storage as txt2img.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import psutil


def _rss_mib() -> float:
    return round(psutil.Process().memory_info().rss / 2**20, 1)


def _peak_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def _storages(pipe: Any) -> dict[str, set[int]]:
    """Per component: the data pointers of every parameter and buffer."""
    out = {}
    for name, module in pipe.components.items():
        if hasattr(module, "parameters"):
            out[name] = {t.data_ptr() for t in [*module.parameters(), *module.buffers()]}
    return out


def main(data_dir: Path) -> dict[str, Any]:
    import torch

    torch.set_num_threads(1)
    from benchmarks._common import quiet_libraries, tiny_settings
    from benchmarks._harness import selfie_image

    quiet_libraries()
    from PIL import Image

    from likeness.generation import PortraitRequest, StableDiffusionEngine

    stages: dict[str, float] = {"imports": _rss_mib()}
    engine = StableDiffusionEngine.load(tiny_settings(data_dir))
    model = engine.model
    stages["engine loaded"] = _rss_mib()
    params_mib = sum(
        p.numel() * p.element_size() for m in model.pipe.components.values() if hasattr(m, "parameters")
        for p in m.parameters()
    ) / 2**20  # fmt: skip
    base = _storages(model.pipe)
    selfie = selfie_image()
    init = Image.new("RGB", (64, 64), "lightblue")
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    preset = engine.presets.resolve("headshot")

    def txt2img() -> None:
        engine.portrait(PortraitRequest(selfie=selfie, preset=preset, seeds=(1,)))

    common = {"prompt": "a portrait", "num_inference_steps": 4, "ip_adapter_image": selfie, "output_type": "pil"}

    def img2img() -> None:
        model.img2img(image=init, strength=0.6, **common)

    def inpaint() -> None:
        model.inpaint(image=init, mask_image=mask, strength=0.9, **common)

    runs = {"txt2img": txt2img, "img2img": img2img, "inpaint": inpaint}
    for round_ in (1, 2):
        for name, fn in runs.items():
            fn()
            stages[f"{name} run {round_}"] = _rss_mib()
    from diffusers import AutoPipelineForImage2Image, AutoPipelineForInpainting

    extra = [AutoPipelineForImage2Image.from_pipe(model.pipe), AutoPipelineForInpainting.from_pipe(model.pipe)]
    stages["2 more pipelines derived"] = _rss_mib()
    shared = {}
    for label, pipe in (("img2img", model.img2img), ("inpaint", model.inpaint), ("derived", extra[1])):
        theirs = _storages(pipe)
        shared[label] = all(theirs.get(name, set()) <= ptrs for name, ptrs in base.items() if name in theirs) and all(
            getattr(pipe, name) is module
            for name, module in model.pipe.components.items()
            if isinstance(module, torch.nn.Module) and hasattr(pipe, name)
        )
    after = _storages(model.pipe)
    return {
        "rss_mib": stages,
        "peak_rss_mib": _peak_mib(),
        "params_mib": round(params_mib, 2),
        "shares_weights": shared,
        "weights_unchanged_after_runs": after == base,
        "growth_round2_mib": round(stages["inpaint run 2"] - stages["inpaint run 1"], 1),
        "growth_derive_mib": round(stages["2 more pipelines derived"] - stages["inpaint run 2"], 1),
    }


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1]))))
