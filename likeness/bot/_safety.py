"""What happens to a finished image once the NSFW guard has scored it: deliver, send behind a spoiler, or withhold.

Pure logic, no I/O. The adapters describe the place (`Place`) and the worker supplies the score:

    normal place                                   flagged → WITHHOLD (the user gets `notice(...)`)
    age-restricted, operator allows, community allows  flagged → SPOILER
    anything else                                  flagged → WITHHOLD

Age-restricted means a Discord channel with the `nsfw` flag, or a Telegram chat whose admins marked it so
(`ChatSettings.age_restricted`). Both switches default to off.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from likeness.config import Settings

__all__ = ["Decision", "Place", "decide", "is_flagged", "notice"]


class Decision(enum.Enum):
    """How one generated image reaches the chat."""

    DELIVER = "deliver"
    SPOILER = "spoiler"
    WITHHOLD = "withhold"


@dataclass(frozen=True)
class Place:
    """Where the image would be posted.

    `age_restricted`: Discord channel `nsfw` flag / Telegram per-chat admin setting.
    `allow_nsfw`: the community's own opt-in (`ChatSettings.allow_nsfw`).
    """

    age_restricted: bool
    allow_nsfw: bool = False


def is_flagged(nsfw: float | bool, settings: Settings) -> bool:
    """A guard result (probability or ready-made flag) compared with `settings.nsfw_threshold`."""
    if isinstance(nsfw, bool):
        return nsfw
    if not 0.0 <= nsfw <= 1.0:
        raise ValueError(f"NSFW score must be a probability in [0, 1], got {nsfw!r}")
    return nsfw >= settings.nsfw_threshold


def decide(nsfw: float | bool, place: Place, settings: Settings) -> Decision:
    """Deliver clean images; flagged ones only behind a spoiler where operator, place and community all allow."""
    if not is_flagged(nsfw, settings):
        return Decision.DELIVER
    if settings.allow_nsfw_age_restricted and place.age_restricted and place.allow_nsfw:
        return Decision.SPOILER
    return Decision.WITHHOLD


def notice(decision: Decision, place: Place, settings: Settings) -> str | None:
    """Text for the requester: why the image was withheld, or the warning sent with a spoilered image."""
    if decision is Decision.SPOILER:
        return "⚠️ The safety check flagged this image as possibly explicit, so it is hidden behind a spoiler."
    if decision is Decision.DELIVER:
        return None
    text = (
        "I made your image, but my safety check flagged it as possibly explicit, so I won't post it here. "
        "Try a different prompt or preset."
    )
    if settings.allow_nsfw_age_restricted and not place.age_restricted:
        text += " Admins can allow such images, behind a spoiler, in age-restricted channels or chats only."
    elif settings.allow_nsfw_age_restricted and not place.allow_nsfw:
        text += " Admins can allow such images here, behind a spoiler."
    return text
