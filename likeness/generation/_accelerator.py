"""Translating accelerator and library failures into Likeness errors, once, at the generation edge."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from likeness.errors import GenerationFailed, LikenessError, OutOfMemory

__all__ = ["free_accelerator_memory", "service_errors"]

log = logging.getLogger(__name__)


@contextmanager
def service_errors(batch: int) -> Iterator[None]:
    """Our errors pass; accelerator OOM → `OutOfMemory(batch=...)`; anything else → `GenerationFailed`."""
    try:
        yield
    except LikenessError:
        raise
    except Exception as exc:
        if _is_oom(exc):
            free_accelerator_memory()
            raise OutOfMemory(batch=batch) from exc
        log.exception("generation failed")
        raise GenerationFailed() from exc


def _is_oom(exc: BaseException) -> bool:
    oom_types = tuple(t for t in (getattr(torch, "OutOfMemoryError", None), torch.cuda.OutOfMemoryError) if t)
    return isinstance(exc, oom_types) or (isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower())


def free_accelerator_memory() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    elif torch.backends.mps.is_available():
        torch.mps.empty_cache()
