"""3. Preset switching: a request whose preset needs another LoRA vs. the same preset again.

Requests differ only in their style LoRA (the ghibli preset with each LoRA preset's LoRA), so any time
difference is the switch. Each round: `hotswap` — a LoRA not in the cached slots (one slot fewer than
the LoRAs cycling through them, so the least recently used slot is swapped in place by `LoraSwapper`);
`same` — that request again; `cached` — the previous round's LoRA, still in a slot (`set_adapters`
only). The target uses the time spent in `LoraBank.activate`, the only code that differs; end-to-end
medians are shown beside it. Checks that the base model is never reloaded (no `from_pretrained` call;
the pipeline, UNet and a base weight's storage stay the same objects) and that every hot-swap round
swapped in place rather than reloading the LoRA (`load_lora_weights`).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from benchmarks._common import BenchContext, BenchResult, Target, summary_ms
from benchmarks._harness import selfie_image

NAME = "presets"
TITLE = "Preset switching: another LoRA (hot-swap / cached slot) vs the same preset (tiny model, CPU)"
BASE = "ghibli"


def run(ctx: BenchContext) -> BenchResult:

    from likeness.generation import PortraitRequest

    engine = ctx.engine()
    model = engine.model
    base = engine.presets.resolve(BASE)
    lora_presets = [p for p in engine.presets if p.loras]
    variants = [base.model_copy(update={"loras": p.loras}) for p in lora_presets]
    if len(variants) < 2:
        raise RuntimeError("need at least 2 LoRA presets")
    # The engine keeps one slot per preset LoRA, so switching presets hits a cached slot. To also measure
    # the hot-swap that operator extras beyond the bank need, run with one slot fewer than the variants.
    default_capacity = model.loras.capacity
    model.loras.capacity = len(variants) - 1
    selfie = selfie_image()
    rounds = 6 if ctx.quick else 24

    activate_s: list[float] = []
    swap_s: list[float] = []
    loads: list[dict[str, Any]] = []
    with (
        _timed(model.loras, "activate", activate_s),
        _timed(model.loras.swapper, "swap", swap_s),
        _timed(model.pipe, "load_lora_weights", [], loads),
    ):

        def portrait(preset: Any) -> tuple[float, float]:
            before = len(activate_s)
            start = time.perf_counter()
            engine.portrait(PortraitRequest(selfie=selfie, preset=preset, seeds=(3,)))
            assert len(activate_s) == before + 1
            return time.perf_counter() - start, activate_s[-1]

        for variant in variants:  # warm-up: fill the slots, build every LoRA once
            portrait(variant)
        identity = _identity(model)
        loads.clear()
        swap_s.clear()
        with _counting_from_pretrained() as from_pretrained_calls:
            timings: dict[str, list[tuple[float, float]]] = {"same": [], "cached": [], "hotswap": []}
            for i in range(len(variants), len(variants) + rounds):
                timings["hotswap"].append(portrait(variants[i % len(variants)]))
                timings["same"].append(portrait(variants[i % len(variants)]))
                timings["cached"].append(portrait(variants[(i - 1) % len(variants)]))
        reloaded = _identity(model) != identity
    model.loras.capacity = default_capacity

    result = BenchResult(NAME, TITLE)
    same_total = statistics.median(t for t, _ in timings["same"])
    same_activate = statistics.median(a for _, a in timings["same"])
    for mode in ("same", "cached", "hotswap"):
        totals = [t for t, _ in timings[mode]]
        activates = [a for _, a in timings[mode]]
        result.rows.append(
            {
                "request": mode,
                "n": len(totals),
                "total_p50_ms": round(statistics.median(totals) * 1000, 1),
                "added_total_ms": round((statistics.median(totals) - same_total) * 1000, 1),
                **{f"activate_{k}": v for k, v in summary_ms(activates).items() if k in ("p50_ms", "p95_ms")},
                "added_activate_ms": round((statistics.median(activates) - same_activate) * 1000, 1),
            }
        )
    added = {row["request"]: row["added_activate_ms"] for row in result.rows}
    result.targets += [
        Target(
            "added by a preset switch (cached slot, the default for preset LoRAs)", added["cached"], 20, "<=", " ms"
        ),
        Target("added by a LoRA hot-swap (LoRAs beyond the bank)", added["hotswap"], 20, "<=", " ms"),
        Target("from_pretrained calls while switching", from_pretrained_calls(), 0, "<="),
        Target("base model objects replaced while switching", float(reloaded), 0, "<="),
        Target("hot-swap requests that swapped in place", len(swap_s), rounds, ">="),
        Target("LoRA reloads (load_lora_weights) while switching", len(loads), 0, "<="),
    ]
    result.details = {
        "swap": summary_ms(swap_s) if swap_s else {},
        "lora_loads": [{k: str(v) for k, v in c.items()} for c in loads][:8],
        "identity": identity,
    }
    return result


def _identity(model: Any) -> dict[str, int]:
    """Object ids and base-weight storage that a reload would change."""
    unet = model.pipe.unet
    return {
        "pipe": id(model.pipe),
        "unet": id(unet),
        "vae": id(model.pipe.vae),
        "img2img_unet": id(model.img2img.unet),
        "inpaint_unet": id(model.inpaint.unet),
        "conv_in_weight_ptr": unet.conv_in.weight.data_ptr(),
    }


@contextmanager
def _timed(obj: Any, name: str, out: list[float], calls: list[dict[str, Any]] | None = None) -> Iterator[None]:
    """Wrap `obj.name`: the seconds of each call that returns go to `out`, its keyword arguments to `calls`."""
    original = getattr(obj, name)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if calls is not None:
            calls.append(dict(kwargs))
        start = time.perf_counter()
        result = original(*args, **kwargs)
        out.append(time.perf_counter() - start)
        return result

    setattr(obj, name, wrapper)
    try:
        yield
    finally:
        delattr(obj, name)


@contextmanager
def _counting_from_pretrained() -> Iterator[Callable[[], int]]:
    """Count every `from_pretrained` of diffusers pipelines/models and transformers models."""
    from diffusers import DiffusionPipeline, ModelMixin
    from transformers import PreTrainedModel

    calls = 0
    originals = {cls: cls.__dict__["from_pretrained"] for cls in (DiffusionPipeline, ModelMixin, PreTrainedModel)}

    def counting(original: Any) -> Any:
        def from_pretrained(cls: Any, *args: Any, **kwargs: Any) -> Any:
            nonlocal calls
            calls += 1
            return original.__func__(cls, *args, **kwargs)

        return classmethod(from_pretrained)

    for cls, original in originals.items():
        setattr(cls, "from_pretrained", counting(original))  # noqa: B010 - replaced on the class itself
    try:
        yield lambda: calls
    finally:
        for cls, original in originals.items():
            setattr(cls, "from_pretrained", original)  # noqa: B010
