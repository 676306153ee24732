"""Buttons under a result, as platform-neutral specs with compact, restart-proof ids.

An id is `lk:<action>:<result id>`: it carries everything needed to act, so a button works after a bot
restart and on any replica (Telegram callback data ≤ 64 bytes, Discord custom ids ≤ 100 chars).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

__all__ = ["Action", "Button", "parse_button_id", "result_buttons"]

_ID_RE = re.compile(r"^lk:([a-z]+):([A-Za-z0-9_-]{1,48})$")


class Action(StrEnum):
    REROLL = "reroll"
    EDIT = "edit"
    VARIATIONS = "vary"
    FULL_SIZE = "full"


_LABELS = {
    Action.REROLL: "🔄 Reroll",
    Action.EDIT: "✏️ Edit",
    Action.VARIATIONS: "✨ Variations",
    Action.FULL_SIZE: "📥 Full size",
}


@dataclass(frozen=True, slots=True)
class Button:
    label: str
    action: Action
    result_id: str

    @property
    def id(self) -> str:
        return f"lk:{self.action.value}:{self.result_id}"


def result_buttons(result_id: str) -> list[Button]:
    """The buttons every delivered result gets, in display order."""
    return [Button(_LABELS[action], action, result_id) for action in Action]


def parse_button_id(button_id: str) -> tuple[Action, str] | None:
    """`lk:reroll:abc` → (Action.REROLL, "abc"); None for ids that are not ours or are malformed."""
    match = _ID_RE.fullmatch(button_id or "")  # not .match: `$` also matches before a trailing newline
    if not match:
        return None
    try:
        return Action(match.group(1)), match.group(2)
    except ValueError:
        return None
