"""Small pieces every Telegram module shares: the app's state, origins, and sends that quote and stay in topic."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from telegram import (
    Bot,
    Chat,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    MaybeInaccessibleMessage,
    Message,
    ReplyParameters,
    User,
)
from telegram.constants import MessageLimit
from telegram.ext import ContextTypes

from likeness.bot._buttons import Button
from likeness.bot._core import BotCore
from likeness.config import Settings
from likeness.queue import Origin

if TYPE_CHECKING:
    from likeness.bot.telegram._progress import ProgressTracker

__all__ = [
    "PLATFORM",
    "BotState",
    "bot_state",
    "install_state",
    "keyboard",
    "origin_for",
    "reply_to",
    "send_text",
    "state",
    "thread_of",
]

PLATFORM: Literal["telegram"] = "telegram"
_STATE_KEY = "likeness"


@dataclass(frozen=True, slots=True)
class BotState:
    """What handlers need, injected into `Application.bot_data` (no module-level clients)."""

    settings: Settings
    core: BotCore
    progress: ProgressTracker
    download_limit: int


def state(context: ContextTypes.DEFAULT_TYPE) -> BotState:
    return bot_state(context.bot_data)


def bot_state(bot_data: dict[str, object]) -> BotState:
    value = bot_data[_STATE_KEY]
    assert isinstance(value, BotState)
    return value


def install_state(bot_data: dict[str, object], value: BotState) -> None:
    bot_data[_STATE_KEY] = value


def thread_of(message: MaybeInaccessibleMessage | None) -> int | None:
    """The forum topic of a message; replies in ordinary groups also carry a thread id, which must not be reused."""
    if isinstance(message, Message) and message.is_topic_message and message.message_thread_id:
        return message.message_thread_id
    return None


def origin_for(chat: Chat, user: User, message_id: int | None, thread: int | str | None) -> Origin:
    """Where a request came from and where its answers go (`message_id` is what answers reply to)."""
    return Origin(
        platform=PLATFORM,
        chat_id=str(chat.id),
        user_id=str(user.id),
        message_id=str(message_id) if message_id is not None else None,
        thread_id=str(thread) if thread is not None else None,
    )


def keyboard(buttons: tuple[Button, ...] | list[Button]) -> InlineKeyboardMarkup | None:
    """Two buttons per row: fits phones."""
    if not buttons:
        return None
    row = [InlineKeyboardButton(b.label, callback_data=b.id) for b in buttons]
    return InlineKeyboardMarkup([row[i : i + 2] for i in range(0, len(row), 2)])


def reply_to(message_id: int | str | None) -> ReplyParameters | None:
    """Quote the request (also in private chats), and still answer if it was deleted meanwhile."""
    if message_id is None:
        return None
    return ReplyParameters(message_id=int(message_id), allow_sending_without_reply=True)


async def send_text(
    bot: Bot,
    chat_id: int | str,
    text: str,
    *,
    reply: int | str | None = None,
    thread: int | str | None = None,
    markup: InlineKeyboardMarkup | None = None,
) -> Message:
    """Send `text` as a reply in the same topic; texts over Telegram's limit go out in several messages."""
    limit = MessageLimit.MAX_TEXT_LENGTH
    chunks = [text[i : i + limit] for i in range(0, len(text), limit)] or [" "]
    sent: Message | None = None
    for index, chunk in enumerate(chunks):
        sent = await bot.send_message(
            int(chat_id),
            chunk,
            reply_parameters=reply_to(reply) if index == 0 else None,
            message_thread_id=int(thread) if thread is not None else None,
            reply_markup=markup if index == len(chunks) - 1 else None,
        )
    assert sent is not None
    return sent
