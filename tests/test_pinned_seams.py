"""Seams with libraries whose private parts Likeness relies on, each pinned to a version range in pyproject.toml.

CI installs the newest release inside each range, so these run against what users get. When one fails, a library
moved under us: re-check what its message names against the new release, adapt our side, then move the bound.

- arq `>=0.26,<0.29`: `LikenessWorker` overrides arq's private poll loop and job slots, and the queue client
  reads arq's keys directly. Tested here.
- discord.py `>=2.4,<2.8`: public API only (`Webhook.partial(...).edit_message("@original")` for late results,
  `CommandTree.get_commands()`), plus `discord.http.Route.BASE` for the REST base. Tested here, and end to end
  in tests/test_discord.py (late results after a restart through the stored token).
- diffusers `>=0.32,<0.43` and peft `>=0.13,<0.22`: the in-place LoRA swap (`likeness/generation/_lora_swap.py`)
  re-derives diffusers' LoRA layout through its internals and works around peft's hot-swap keeping the old
  `r`/`lora_alpha`. Shapes here; the canary for that bug and the check of `LoraBank`'s adapter activation against
  `pipe.set_adapters` live in tests/test_lora_swap.py, which builds the tiny pipeline they need.
- python-telegram-bot and aiohttp: only public API, so no upper bound (nothing here).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import tomllib
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement

from likeness.queue import keys

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"
PINNED = ("arq", "discord.py", "diffusers", "peft")


def _requirements() -> dict[str, Requirement]:
    project = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]
    lines = [*project["dependencies"], *(line for extra in project["optional-dependencies"].values() for line in extra)]
    return {req.name: req for req in map(Requirement, lines)}


def _params(function: Any) -> list[str]:
    return list(inspect.signature(function).parameters)


def _source(function: Any) -> str:
    return inspect.getsource(function)


@pytest.mark.parametrize("name", PINNED)
def test_pinned_libraries_have_an_upper_bound_that_the_installed_release_meets(name: str) -> None:
    """Every library below is pinned from above, and these tests run on a release inside the pin (what CI gets).

    Fails when someone drops a bound (put it back: see this module's docstring), or when the installed release
    is outside it (reinstall with `pip install -e ".[all,test]"`; a bound is moved only after the seam tests of
    that library pass on the new release).
    """
    requirement = _requirements()[name]
    assert any(spec.operator in ("<", "<=", "~=", "==") for spec in requirement.specifier), (
        f"{name} needs an upper bound in pyproject.toml: we rely on its private parts"
    )
    installed = version(name)
    assert requirement.specifier.contains(installed, prereleases=True), (
        f"{name} {installed} is installed, outside the pinned {requirement.specifier}"
    )


# --- arq -----------------------------------------------------------------------------------------------------


def _arq_moved(what: str) -> str:
    return (
        f"arq {version('arq')} changed {what}. LikenessWorker (likeness/worker/_arq.py) overrides arq's "
        "Worker._poll_iteration, start_jobs and _release_sem_dec_counter_on_complete, and gives back job slots "
        "through self.sem / self.job_counter / self.tasks: re-check those overrides against the new worker.py, "
        "run tests/test_worker*.py, then move the `arq<...` bound in pyproject.toml."
    )


def test_arq_worker_methods_that_likeness_worker_overrides() -> None:
    """arq 0.26–0.28: the private methods `LikenessWorker` overrides exist, with the signatures it calls, and
    arq's loop still goes through them: main → `_poll_iteration` → `start_jobs`, each started job takes a slot
    (`sem`, `job_counter`) and gives it back in `_release_sem_dec_counter_on_complete`.

    When it fails: arq reshaped its poll loop. Re-check `LikenessWorker` (wake-ups instead of arq's timer, the
    pipelined in-progress check, the slot given back after a Redis error) against arq's new `Worker`.
    """
    from arq.worker import Worker

    assert inspect.iscoroutinefunction(Worker._poll_iteration), _arq_moved("Worker._poll_iteration")
    assert _params(Worker._poll_iteration) == ["self"], _arq_moved("Worker._poll_iteration's signature")
    assert inspect.iscoroutinefunction(Worker.start_jobs), _arq_moved("Worker.start_jobs")
    assert _params(Worker.start_jobs) == ["self", "job_ids"], _arq_moved("Worker.start_jobs's signature")
    release = Worker._release_sem_dec_counter_on_complete
    assert not inspect.iscoroutinefunction(release), _arq_moved("_release_sem_dec_counter_on_complete")
    assert _params(release) == ["self"], _arq_moved("_release_sem_dec_counter_on_complete's signature")
    assert inspect.iscoroutinefunction(Worker.close) and _params(Worker.close) == ["self"], _arq_moved("close")
    assert _params(Worker.handle_sig) == ["self", "signum"], _arq_moved("handle_sig (used by worker_in_loop)")
    # The call graph the overrides hook into, as arq writes it.
    main, poll, start = _source(Worker.main), _source(Worker._poll_iteration), _source(Worker.start_jobs)
    assert "poll(self.poll_delay_s)" in main and "self._poll_iteration()" in main, _arq_moved("Worker.main's loop")
    assert "self.start_jobs(" in poll and "self._cancel_aborted_jobs()" in poll, _arq_moved("_poll_iteration")
    for piece in ("self.sem.acquire()", "self.job_counter + 1", "_release_sem_dec_counter_on_complete", "self.tasks["):
        assert piece in start, _arq_moved(f"how start_jobs takes a job slot ({piece!r} is gone)")
    for piece in ("self.job_counter - 1", "self.sem.release()"):
        assert piece in _source(release), _arq_moved(f"how a job slot is given back ({piece!r} is gone)")


async def test_arq_worker_attributes_that_likeness_worker_uses() -> None:
    """arq 0.26–0.28: a constructed `LikenessWorker` has arq's `sem`, `job_counter`, `tasks`, `max_jobs`,
    `ctx` and `poll_delay_s` (our `poll_delay` becomes `idle_poll_s`; arq's own timer is off).

    When it fails: arq renamed or retyped them; re-check `LikenessWorker._poll_iteration`'s slot recovery and
    `start_jobs`' capacity check.
    """
    from arq.connections import RedisSettings
    from arq.worker import func

    from likeness.worker import LikenessWorker

    async def job(ctx: dict[str, Any]) -> None:
        return None

    worker = LikenessWorker(
        functions=[func(job, name=keys.ARQ_FUNCTION)],
        redis_settings=RedisSettings(),
        handle_signals=False,
        max_jobs=3,
        poll_delay=0.25,
    )
    assert isinstance(worker.sem, asyncio.BoundedSemaphore), _arq_moved("Worker.sem")
    assert worker.job_counter == 0, _arq_moved("Worker.job_counter")
    assert worker.tasks == {}, _arq_moved("Worker.tasks")
    assert worker.max_jobs == 3, _arq_moved("Worker.max_jobs")
    assert isinstance(worker.ctx, dict), _arq_moved("Worker.ctx")
    assert worker.poll_delay_s == 0 and worker.idle_poll_s == 0.25, _arq_moved("Worker.poll_delay_s")


async def test_arq_keeps_jobs_and_aborts_under_the_keys_the_queue_client_reads(redis_url: str) -> None:
    """arq 0.26–0.28: `likeness.queue.keys` takes arq's key names from `arq.constants`, and arq still uses them the
    way our Lua scripts and `QueueClient._stop` assume: a job id in the `ARQ_QUEUE` sorted set, its definition at
    `ARQ_JOB + id`, and an abort asked by `Job.abort` as the job id in the `ARQ_ABORT` sorted set (which
    `_stop` writes itself: `Job.abort` can't remove a queued job at once).

    When it fails: re-check `_POSITION`, `_REMOVE_QUEUED` and `_stop` in likeness/queue/_client.py, and the
    runner's queue peeks (likeness/worker/_runner.py), against arq's new layout.
    """
    from arq import constants
    from arq.connections import RedisSettings, create_pool

    assert (
        constants.default_queue_name,
        constants.in_progress_key_prefix,
        constants.job_key_prefix,
        constants.abort_jobs_ss,
    ) == (keys.ARQ_QUEUE, keys.ARQ_IN_PROGRESS, keys.ARQ_JOB, keys.ARQ_ABORT)
    pool = await create_pool(RedisSettings.from_dsn(redis_url))
    try:
        job = await pool.enqueue_job(keys.ARQ_FUNCTION, "payload", _job_id="seam-job")
        assert job is not None
        assert await pool.zscore(keys.ARQ_QUEUE, "seam-job") is not None, _arq_moved("where queued jobs wait")
        assert await pool.exists(keys.ARQ_JOB + "seam-job"), _arq_moved("where a job's definition is kept")
        with contextlib.suppress(TimeoutError):  # `abort` waits for the job's end, which never comes here
            await asyncio.wait_for(job.abort(poll_delay=0.05), 0.3)
        assert await pool.zscore(keys.ARQ_ABORT, "seam-job") is not None, _arq_moved("how Job.abort asks workers")
    finally:
        await pool.aclose()


# --- discord.py ----------------------------------------------------------------------------------------------


def _discord_moved(what: str) -> str:
    return (
        f"discord.py {version('discord.py')} changed {what}. Late results edit the interaction's response from its "
        "stored token (likeness/bot/discord/_delivery.py::edit_original_response) and the bot points discord.py at "
        "its REST base through discord.http.Route.BASE (likeness/bot/discord/__init__.py::build_client): re-check "
        "both, run tests/test_discord*.py, then move the `discord.py<...` bound in pyproject.toml."
    )


def test_discord_api_for_late_results_and_the_rest_base() -> None:
    """discord.py 2.4–2.7: `Webhook.partial(id, token, client=...)` and `Webhook.edit_message(message_id,
    content=, attachments=, view=)` exist as `edit_original_response` calls them, and every REST route (webhooks
    included) starts with the class attribute `Route.BASE` that `build_client` sets. The requests themselves are
    checked end to end against the fake Discord in tests/test_discord.py.

    When it fails: see the message; a public replacement for `Route.BASE` would be welcome.
    """
    import discord
    import discord.http

    partial = inspect.signature(discord.Webhook.partial).parameters
    assert {"id", "token", "client"} <= set(partial), _discord_moved("Webhook.partial")
    edit = inspect.signature(discord.Webhook.edit_message).parameters
    assert {"message_id", "content", "attachments", "view"} <= set(edit), _discord_moved("Webhook.edit_message")
    assert isinstance(discord.http.Route.BASE, str), _discord_moved("discord.http.Route.BASE")
    route = discord.http.Route(
        "PATCH", "/webhooks/{webhook_id}/{webhook_token}/messages/@original", webhook_id=1, webhook_token="t"
    )
    assert route.url.startswith(discord.http.Route.BASE), _discord_moved("how routes build their URL")


# --- diffusers and peft --------------------------------------------------------------------------------------


def _lora_moved(what: str) -> str:
    return (
        f"diffusers {version('diffusers')} / peft {version('peft')} changed {what}. The in-place LoRA swap "
        "(likeness/generation/_lora_swap.py: _read_layout mirrors diffusers' `load_lora_adapter`; _set_scale "
        "writes peft's layer fields) and LoraBank._set_adapters (likeness/generation/_loading.py) rely on it: "
        "re-check them against the new releases, run tests/test_lora_swap.py, then move the bounds in pyproject.toml."
    )


def test_diffusers_and_peft_internals_that_the_lora_swap_mirrors() -> None:
    """diffusers 0.32–0.42 and peft 0.13–0.21: the internals `_lora_swap` and `LoraBank` use exist with the
    signatures they call: diffusers' LoRA metadata key, `get_peft_kwargs`, `convert_unet_state_dict_to_peft`,
    `load_lora_weights(..., hotswap=)`; peft's `get_pattern_key`, and a LoRA layer's `r`, `lora_alpha`, `scaling`,
    `use_rslora`, `set_adapter(names, inference_mode=)` and `set_scale(adapter, scale)`. Also the private
    `deprecation_utils._resolve_dtype` that tells `_loading` whether diffusers takes `dtype=`.

    That the swap still draws like a fresh load is checked with pictures in tests/test_lora_swap.py.
    """
    from diffusers import StableDiffusionXLPipeline
    from diffusers.loaders.lora_base import LORA_ADAPTER_METADATA_KEY
    from diffusers.utils import convert_unet_state_dict_to_peft, deprecation_utils
    from diffusers.utils.peft_utils import get_peft_kwargs
    from peft.tuners.lora import LoraLayer
    from peft.tuners.tuners_utils import BaseTunerLayer
    from peft.utils.other import get_pattern_key

    assert LORA_ADAPTER_METADATA_KEY == "lora_adapter_metadata", _lora_moved("the LoRA metadata key")
    assert _params(get_peft_kwargs)[:4] == ["rank_dict", "network_alpha_dict", "peft_state_dict", "is_unet"], (
        _lora_moved("get_peft_kwargs")
    )
    assert _params(convert_unet_state_dict_to_peft) == ["state_dict"], _lora_moved("convert_unet_state_dict_to_peft")
    assert "hotswap" in _params(StableDiffusionXLPipeline.load_lora_weights), _lora_moved("load_lora_weights")
    assert hasattr(StableDiffusionXLPipeline, "enable_lora_hotswap"), _lora_moved("enable_lora_hotswap")
    assert _params(get_pattern_key) == ["pattern_keys", "key_to_match"], _lora_moved("get_pattern_key")
    assert {"lora_A", "lora_B"} <= set(LoraLayer.adapter_layer_names), _lora_moved("LoraLayer.adapter_layer_names")
    assert {"r", "lora_alpha", "scaling", "use_rslora"} <= set(LoraLayer.other_param_names), _lora_moved(
        "LoraLayer.other_param_names"
    )
    assert _params(BaseTunerLayer.set_adapter) == ["self", "adapter_names", "inference_mode"], _lora_moved(
        "BaseTunerLayer.set_adapter"
    )
    assert _params(LoraLayer.set_scale) == ["self", "adapter", "scale"], _lora_moved("LoraLayer.set_scale")
    scale = _source(LoraLayer.set_scale)
    assert "self.lora_alpha[adapter]" in scale and "self.r[adapter]" in scale, _lora_moved("how set_scale scales")
    assert hasattr(deprecation_utils, "_resolve_dtype"), (
        f"diffusers {version('diffusers')} dropped the private deprecation_utils._resolve_dtype, which "
        "likeness/generation/_loading.py::_diffusers_dtype_kw probes to pass `dtype=` rather than the deprecated "
        "`torch_dtype=`: find another sign, then move the `diffusers<...` bound in pyproject.toml."
    )
