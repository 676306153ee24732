"""Result buttons that survive restarts, and the edit dialog.

Buttons are `DynamicItem`s: their custom id (`lk:<action>:<result id>`, see `likeness.bot._buttons`) holds
everything needed, and the class is registered once at start (`client.add_dynamic_items`), so a button on a
week-old message works on any replica after any restart; no per-message view lives in memory.
The edit dialog is answered in `on_interaction` by its custom id for the same reason.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import discord

from likeness.bot._buttons import Action, Button, parse_button_id

__all__ = ["EDIT_MODAL_PREFIX", "ButtonHandler", "EditModal", "ResultButton", "modal_instruction", "result_view"]

EDIT_MODAL_PREFIX = "lk:editmodal:"
_INSTRUCTION_ID = "instruction"
_STYLES = {Action.REROLL: discord.ButtonStyle.primary, Action.FULL_SIZE: discord.ButtonStyle.secondary}


@runtime_checkable
class ButtonHandler(Protocol):
    """The client that handles result buttons (`interaction.client`)."""

    async def on_result_button(self, interaction: discord.Interaction, action: Action, result_id: str) -> None: ...


class ResultButton(
    discord.ui.DynamicItem[discord.ui.Button[Any]], template=r"lk:(?P<action>[a-z]+):(?P<rid>[A-Za-z0-9_-]{1,48})"
):
    """🔄 Reroll, ✏️ Edit, ✨ Variations, 📥 Full size under a result."""

    def __init__(self, button: Button) -> None:
        super().__init__(
            discord.ui.Button(
                label=button.label,
                custom_id=button.id,
                style=_STYLES.get(button.action, discord.ButtonStyle.secondary),
            )
        )
        self.action = button.action
        self.result_id = button.result_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> ResultButton:
        parsed = parse_button_id(match.group(0))
        if parsed is None:
            raise ValueError(f"not a result button: {match.group(0)!r}")
        action, result_id = parsed
        label = getattr(item, "label", None) or action.value
        return cls(Button(label, action, result_id))

    async def callback(self, interaction: discord.Interaction) -> None:
        if isinstance(interaction.client, ButtonHandler):
            await interaction.client.on_result_button(interaction, self.action, self.result_id)


def result_view(buttons: Sequence[Button]) -> discord.ui.View | None:
    """A persistent view (no timeout) with the result's buttons; None when there are none."""
    if not buttons:
        return None
    view = discord.ui.View(timeout=None)
    for button in buttons:
        view.add_item(ResultButton(button))
    return view


class EditModal(discord.ui.Modal):
    """ "What should change?" for one result; the submit is handled by the client's `on_interaction`."""

    instruction: discord.ui.TextInput[EditModal] = discord.ui.TextInput(
        label="What should change?",
        placeholder="make the hair blue · background: Paris at night · add sunglasses",
        custom_id=_INSTRUCTION_ID,
        style=discord.TextStyle.paragraph,
        max_length=1000,
    )

    def __init__(self, result_id: str) -> None:
        # A timeout only frees discord.py's copy of a dismissed dialog: the submit is answered by custom id.
        super().__init__(title="✏️ Edit this portrait", custom_id=f"{EDIT_MODAL_PREFIX}{result_id}", timeout=900)


def modal_instruction(data: dict[str, Any]) -> tuple[str, str] | None:
    """(result id, instruction) from a modal-submit payload of `EditModal`, else None."""
    custom_id = str(data.get("custom_id", ""))
    if not custom_id.startswith(EDIT_MODAL_PREFIX):
        return None
    result_id = custom_id[len(EDIT_MODAL_PREFIX) :]
    stack = list(data.get("components", []))
    while stack:
        component = stack.pop(0)
        if component.get("custom_id") == _INSTRUCTION_ID and "value" in component:
            return result_id, str(component["value"])
        stack.extend(component.get("components", []))
        if "component" in component:  # components v2 labels wrap their input
            stack.append(component["component"])
    return result_id, ""
