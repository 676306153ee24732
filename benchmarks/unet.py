"""6. Full-size timing: an SDXL-size UNet with random weights, timing only the denoising loop.

No download: `UNet2DConditionModel` is built from SDXL-base's UNet config, written inline. The loop is
what a pipeline runs between text encoding and VAE decoding: classifier-free guidance (the UNet sees
2 × batch latents), Euler scheduler steps, random latents and text embeddings. On CUDA: 1024² (128²
latents), 8 and 30 steps, batch 1 and 4, fp16 and bf16, eager and `torch.compile` (its one-off compile
time is reported apart). On the CPU the same code runs a reduced UNet (narrow channels, 256², 2 steps),
so the script is always exercised.
"""

from __future__ import annotations

import copy
import statistics
import time
from typing import Any

from benchmarks._common import BenchContext, BenchResult

NAME = "unet"
TITLE = "Denoising loop: SDXL-size UNet (random weights), CFG, Euler; reduced size on CPU"
GUIDANCE = 5.0

# stabilityai/stable-diffusion-xl-base-1.0, unet/config.json (2.6 B parameters).
SDXL_UNET: dict[str, Any] = {
    "act_fn": "silu",
    "addition_embed_type": "text_time",
    "addition_embed_type_num_heads": 64,
    "addition_time_embed_dim": 256,
    "attention_head_dim": [5, 10, 20],
    "block_out_channels": [320, 640, 1280],
    "center_input_sample": False,
    "cross_attention_dim": 2048,
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    "downsample_padding": 1,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 4,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "mid_block_type": "UNetMidBlock2DCrossAttn",
    "norm_eps": 1e-05,
    "norm_num_groups": 32,
    "out_channels": 4,
    "projection_class_embeddings_input_dim": 2816,  # 6 × 256 (time ids) + 1280 (pooled text)
    "sample_size": 128,
    "transformer_layers_per_block": [1, 2, 10],
    "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    "use_linear_projection": True,
}
POOLED_DIM = 1280

# The same architecture, narrow: for CPU runs (seconds, not minutes).
REDUCED_UNET: dict[str, Any] = {
    **SDXL_UNET,
    "attention_head_dim": [2, 4, 4],
    "block_out_channels": [32, 64, 64],
    "cross_attention_dim": 64,
    "addition_time_embed_dim": 8,
    "projection_class_embeddings_input_dim": 6 * 8 + 32,
    "transformer_layers_per_block": [1, 1, 1],
    "sample_size": 32,
}
REDUCED_POOLED_DIM = 32

# SDXL-base's scheduler config (EulerDiscreteScheduler).
SCHEDULER: dict[str, Any] = {
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000,
    "steps_offset": 1,
    "timestep_spacing": "leading",
    "prediction_type": "epsilon",
}


def run(ctx: BenchContext) -> BenchResult:
    import torch

    cuda = torch.cuda.is_available()
    if cuda:
        plan = Plan(full=True, size=1024, steps=(8, 30), batches=(1, 4), dtypes=("bfloat16", "float16"),
                    compiles=(False, True), repeats={8: 3, 30: 2})  # fmt: skip
    elif ctx.quick:
        plan = Plan(full=False, size=256, steps=(2,), batches=(1,), dtypes=("float32",), compiles=(False,),
                    repeats={2: 3})  # fmt: skip
    else:
        # No torch.compile on the CPU: it took ~220 s per shape here for no gain at this size.
        plan = Plan(full=False, size=256, steps=(2, 8), batches=(1, 4), dtypes=("float32", "bfloat16"),
                    compiles=(False,), repeats={2: 5, 8: 3})  # fmt: skip
    return _run(plan, torch.device("cuda" if cuda else "cpu"), ctx.budget_s)


class Plan:
    def __init__(self, **fields: Any) -> None:
        self.__dict__.update(fields)


def _run(plan: Any, device: Any, budget_s: float | None) -> BenchResult:
    import torch
    from diffusers import EulerDiscreteScheduler, UNet2DConditionModel

    started = time.perf_counter()
    config, pooled_dim = (SDXL_UNET, POOLED_DIM) if plan.full else (REDUCED_UNET, REDUCED_POOLED_DIM)
    torch.manual_seed(0)
    build_start = time.perf_counter()
    with torch.device(device):
        master = UNet2DConditionModel(**config).eval()  # type: ignore[attr-defined]
    build_s = time.perf_counter() - build_start
    params = sum(p.numel() for p in master.parameters())
    result = BenchResult(NAME, TITLE)
    result.details = {
        "config": "sdxl-base" if plan.full else "reduced",
        "parameters": params,
        "build_s": round(build_s, 1),
        "size": plan.size,
        "device": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu",
        "cfg": True,
        "scheduler": "EulerDiscreteScheduler",
    }
    print(f"UNet {result.details['config']}: {params / 1e9:.3f} B parameters, built in {build_s:.1f} s", flush=True)
    latent = plan.size // 8
    scheduler = EulerDiscreteScheduler(**SCHEDULER)
    skipped: list[str] = []
    # Eager first for every dtype, then compiled: what matters most is measured before the budget runs out.
    copies = {name: master.to(getattr(torch, name)) if len(plan.dtypes) == 1 else copy.deepcopy(master).to(
        getattr(torch, name)) for name in plan.dtypes}  # fmt: skip
    del master
    for compiled in plan.compiles:
        for dtype_name, unet in copies.items():
            dtype = getattr(torch, dtype_name)
            model = torch.compile(unet, dynamic=False) if compiled else unet
            for batch in plan.batches:
                if budget_s is not None and time.perf_counter() - started > budget_s:
                    skipped.append(f"{dtype_name} compile={compiled} batch={batch}")
                    continue
                inputs = _inputs(batch, latent, config["cross_attention_dim"], pooled_dim, dtype, device)
                warm_start = time.perf_counter()
                _loop(model, scheduler, inputs, 2, device)  # compiles here when compiled
                warmup_s = time.perf_counter() - warm_start
                for steps in plan.steps:
                    runs = [_loop(model, scheduler, inputs, steps, device) for _ in range(plan.repeats[steps])]
                    loop_s = statistics.median(runs)
                    row = {
                        "dtype": dtype_name,
                        "compile": compiled,
                        "batch": batch,
                        "steps": steps,
                        "size": plan.size,
                        "loop_s": round(loop_s, 4),
                        "ms_per_step": round(loop_s / steps * 1000, 2),
                        "images_per_s": round(batch / loop_s, 3),
                        "warmup_s": round(warmup_s, 1),
                    }
                    if device.type == "cuda":
                        row["peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 1)
                    result.rows.append(row)
                    print("  " + ", ".join(f"{k}={v}" for k, v in row.items()), flush=True)
            del model
            if compiled:
                torch._dynamo.reset()
    if skipped:
        result.notes.append("skipped for the time budget: " + "; ".join(skipped))
    result.notes.append("warmup_s: first 2-step run of a configuration; with compile it is the compile time")
    return result


def _inputs(batch: int, latent: int, text_dim: int, pooled_dim: int, dtype: Any, device: Any) -> dict[str, Any]:
    import torch

    generator = torch.Generator(device="cpu").manual_seed(1)

    def randn(*shape: int) -> Any:
        return torch.randn(*shape, generator=generator).to(device=device, dtype=dtype)

    cfg = 2 * batch  # negative + positive prompts, as with guidance_scale > 1
    return {
        "latents": randn(batch, 4, latent, latent),
        "text": randn(cfg, 77, text_dim),
        "pooled": randn(cfg, pooled_dim),
        "time_ids": torch.tensor([[1024, 1024, 0, 0, 1024, 1024]] * cfg, device=device, dtype=dtype),
    }


def _loop(model: Any, scheduler: Any, inputs: dict[str, Any], steps: int, device: Any) -> float:
    """One denoising loop (what a pipeline does between encoding and decoding); its wall time in seconds."""
    import torch

    _sync(device)
    start = time.perf_counter()
    with torch.inference_mode():
        scheduler.set_timesteps(steps, device=device)
        latents = inputs["latents"] * scheduler.init_noise_sigma
        cond = {"text_embeds": inputs["pooled"], "time_ids": inputs["time_ids"]}
        for t in scheduler.timesteps:
            x = scheduler.scale_model_input(torch.cat([latents, latents]), t)
            noise = model(x, t, encoder_hidden_states=inputs["text"], added_cond_kwargs=cond).sample
            uncond, text = noise.chunk(2)
            noise = uncond + GUIDANCE * (text - uncond)
            latents = scheduler.step(noise, t, latents).prev_sample
    _sync(device)
    return time.perf_counter() - start


def _sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()
