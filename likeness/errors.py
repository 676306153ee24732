"""Errors of Likeness, with a safe text for chat users.

    LikenessError
    ├── UserError            bad input or a refusal: the user can fix it; `user_message` says how
    │   ├── InvalidImage     not an image, too big, a decompression bomb
    │   ├── NoFace, FaceTooSmall
    │   ├── UnknownPreset, InvalidPresetSpec, UnknownFormat
    │   ├── PromptTooLong, PromptRefused, BadInstruction, EmptyMask
    │   ├── RateLimited, TooManyActiveJobs, QueueFull, StorageFull
    │   ├── NotAllowed, Banned, NotRequester, ResultExpired
    ├── ServiceError         our fault or the infrastructure's; users get a generic text + reference
    │   ├── QueueUnavailable, JobTimeout, GenerationFailed, OutOfMemory, ModelUnavailable
    └── ConfigError          operator configuration is invalid (preset files, model specs)

Every error keeps its keyword data in `.data` and pickles by class + data, so it survives the trip
through arq (the worker raises, the bot re-raises) unchanged. User text quoted in a message goes through
`echo` first: control and bidi characters removed, clipped.
"""

from __future__ import annotations

import unicodedata
from typing import Any

__all__ = [
    "BadInstruction",
    "Banned",
    "ConfigError",
    "EmptyMask",
    "FaceTooSmall",
    "GenerationFailed",
    "InvalidImage",
    "InvalidPresetSpec",
    "JobTimeout",
    "LikenessError",
    "ModelUnavailable",
    "NoFace",
    "NotAllowed",
    "NotRequester",
    "OutOfMemory",
    "PromptRefused",
    "PromptTooLong",
    "QueueFull",
    "QueueUnavailable",
    "RateLimited",
    "ResultExpired",
    "ServiceError",
    "StorageFull",
    "TooManyActiveJobs",
    "UnknownFormat",
    "UnknownPreset",
    "UserError",
    "echo",
    "strip_controls",
]

_ECHO_LIMIT = 40


def strip_controls(text: str) -> str:
    """`text` without control, format (bidi overrides, zero-width) and unassigned characters; newlines kept."""
    return "".join(
        ch for ch in text if ch == "\n" or unicodedata.category(ch) not in ("Cc", "Cf", "Co", "Cs", "Cn", "Zl", "Zp")
    )


def echo(text: str, limit: int = _ECHO_LIMIT) -> str:
    """User text as it may be quoted back in a reply: one line, no control or bidi characters, clipped."""
    flat = " ".join(strip_controls(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "…"


def _restore(cls: type[LikenessError], data: dict[str, Any]) -> LikenessError:
    return cls(**data)


class LikenessError(Exception):
    """Root of every Likeness error. Subclasses set `template`, formatted with the keyword data."""

    code = "error"
    template = "Something went wrong."

    def __init__(self, **data: Any) -> None:
        self.data = data
        super().__init__(self.template.format(**data))

    def __reduce__(self) -> tuple[Any, ...]:
        return (_restore, (type(self), self.data))

    def __getattr__(self, name: str) -> Any:
        data = self.__dict__.get("data", {})
        if name in data:
            return data[name]
        raise AttributeError(name)

    @property
    def user_message(self) -> str:
        """Text fit to show a chat user (no internals, no secrets)."""
        return str(self)


class UserError(LikenessError):
    """The request cannot be served as sent; the user can fix it."""

    code = "user_error"
    template = "{message}"


class InvalidImage(UserError):
    code = "invalid_image"
    template = "{message}"


class NoFace(UserError):
    code = "no_face"
    template = (
        "I couldn't find a face in that photo. Please send a clear, front-facing photo of one person with good light."
    )


class FaceTooSmall(UserError):
    code = "face_too_small"
    template = (
        "The face in that photo is too small ({size}px). Please send a closer photo where your face "
        "fills more of the picture."
    )


class UnknownPreset(UserError):
    code = "unknown_preset"
    template = "I don't know the preset “{name}”. Try one of: {valid}."


class InvalidPresetSpec(UserError):
    code = "invalid_preset_spec"
    template = "{message}"


class UnknownFormat(UserError):
    code = "unknown_format"
    template = "I don't know the format “{name}”. Try one of: {valid}."


class PromptTooLong(UserError):
    code = "prompt_too_long"
    template = "That prompt is {length} characters long; please keep it under {limit}."


class PromptRefused(UserError):
    code = "prompt_refused"
    template = "I can't make that image: the request goes against this community's rules."


class BadInstruction(UserError):
    code = "bad_instruction"
    template = "{message}"


class EmptyMask(UserError):
    code = "empty_mask"
    template = "{message}"


class RateLimited(UserError):
    code = "rate_limited"
    template = "You're going a bit fast. Please try again in {retry_after} s."


class TooManyActiveJobs(UserError):
    code = "too_many_active_jobs"
    template = "You already have {active} portraits in progress (limit {limit}). Please wait for one to finish."


class QueueFull(UserError):
    code = "queue_full"
    template = "I'm busy right now. Please try again in {retry_after} s."


class StorageFull(UserError):
    code = "storage_full"
    template = (
        "You've sent a lot of photos recently and the space I keep for your uploads ({limit}) is full. "
        "Older photos are deleted within a day, or /forget deletes them now."
    )


class NotAllowed(UserError):
    code = "not_allowed"
    template = "Sorry, this bot is private and isn't available here."


class Banned(UserError):
    code = "banned"
    template = "Sorry, you can't use this bot."


class NotRequester(UserError):
    code = "not_requester"
    template = "Only the person who asked for this portrait can change it."


class ResultExpired(UserError):
    code = "result_expired"
    template = "That image has expired. Please start a new /portrait."


class ServiceError(LikenessError):
    """Our side failed; users get a generic text with a reference id, operators get the log."""

    code = "service_error"
    template = "Something went wrong on our side."


class QueueUnavailable(ServiceError):
    code = "queue_unavailable"
    template = "The service is temporarily unavailable. Please try again in a minute."


class JobTimeout(ServiceError):
    code = "job_timeout"
    template = "That took too long and was stopped. Please try again."


class GenerationFailed(ServiceError):
    code = "generation_failed"
    template = "The image could not be generated. Please try again."


class OutOfMemory(ServiceError):
    """The accelerator ran out of memory; the worker splits the batch and retries."""

    code = "out_of_memory"
    template = "The GPU ran out of memory for batch size {batch}."


class ModelUnavailable(ServiceError):
    code = "model_unavailable"
    template = "Model “{model}” could not be loaded: {reason}"


class ConfigError(LikenessError):
    """Operator configuration is invalid; the message names the file, the field and the problem."""

    code = "config_error"
    template = "{message}"
