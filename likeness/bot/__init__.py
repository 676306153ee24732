"""Chat frontends: a platform-neutral core plus thin Telegram and Discord adapters.

Never imports torch, diffusers, transformers or `likeness.generation`: a bot host stays light.
The adapters (`likeness.bot.telegram`, `likeness.bot.discord`) are imported only by their commands.
"""

from likeness.bot._access import AccessPolicy
from likeness.bot._buttons import Action, Button, parse_button_id, result_buttons
from likeness.bot._community import ChatSettings, CommunitySettings
from likeness.bot._core import BotCore, ResultMessage
from likeness.bot._links import MessageLinks
from likeness.bot._texts import EDIT_HOWTO, HELP, NEED_SELFIE

__all__ = [
    "EDIT_HOWTO",
    "HELP",
    "NEED_SELFIE",
    "AccessPolicy",
    "Action",
    "BotCore",
    "Button",
    "ChatSettings",
    "CommunitySettings",
    "MessageLinks",
    "ResultMessage",
    "parse_button_id",
    "result_buttons",
]
