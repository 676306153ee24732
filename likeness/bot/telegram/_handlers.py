"""Telegram update handlers: each parses an update, calls the core, and shows the answer.

Errors are not presented here: they propagate to the one error handler (`on_error`), which answers with
`BotCore.error_message` where the user will see it (the progress message, a callback alert, or a reply).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable

from telegram import CallbackQuery, Message, ReactionTypeEmoji, Update
from telegram.constants import ChatMemberStatus, ChatType
from telegram.error import TelegramError
from telegram.ext import (
    Application,
    CallbackQueryHandler,
    CommandHandler,
    ContextTypes,
    MessageHandler,
    MessageReactionHandler,
    filters,
)

from likeness.bot._buttons import Action, parse_button_id
from likeness.bot._core import ResultMessage
from likeness.bot._texts import EDIT_HOWTO, HELP, NEED_SELFIE
from likeness.bot.telegram._common import PLATFORM, BotState, origin_for, reply_to, send_text, state, thread_of
from likeness.bot.telegram._files import download_selfie, selfie_attachment
from likeness.errors import NotRequester, UserError
from likeness.images import sniff_image
from likeness.queue import Origin, Ticket
from likeness.requests import parse_portrait_args, split_command

__all__ = ["REROLL_EMOJI", "InProgressMessage", "on_error", "register_handlers"]

log = logging.getLogger("likeness.bot.telegram")

REROLL_EMOJI = "👎"  # Telegram's fixed reaction set has no 🔄
WORKING_TEXT = "⏳ …"
PORTRAIT_CAPTION = re.compile(r"^\s*/portrait(@\w+)?(\s|$)", re.IGNORECASE)
_PHOTO_HINT = "Nice photo! To turn it into a portrait, send it with the caption /portrait <style> (see /presets)."
_ALERT_LIMIT = 200
_NO_FULL_SIZE = "This image was flagged, so it is shown only behind its spoiler here, not as a file."
# Per-chat switches chat admins may flip (`ChatSettings`); the operator's settings still bound them.
_SETTINGS = {
    "collaborate": "anyone may reroll or edit anyone's portraits",
    "age_restricted": "this chat is for adults (18+)",
    "allow_nsfw": "flagged images are sent behind a spoiler (18+ chats only, if the operator allows it)",
}
_SWITCH = {"on": True, "off": False, "true": True, "false": False, "yes": True, "no": False, "1": True, "0": False}

Submit = Callable[[Origin], Awaitable[Ticket]]


class InProgressMessage(Exception):
    """A request failed after its progress message was sent: the error handler shows the cause there."""

    def __init__(self, message: Message) -> None:
        super().__init__("request failed after its progress message was sent")
        self.message = message


def register_handlers(app: Application) -> None:  # type: ignore[type-arg]
    """Every handler of the bot, in matching order."""
    only_new = filters.UpdateType.MESSAGE
    app.add_handler(CommandHandler(["start", "help"], help_command, filters=only_new))
    app.add_handler(CommandHandler("presets", presets_command, filters=only_new))
    app.add_handler(CommandHandler("portrait", portrait, filters=only_new))
    app.add_handler(
        MessageHandler(
            only_new & (filters.PHOTO | filters.Document.ALL) & filters.CaptionRegex(PORTRAIT_CAPTION), portrait
        )
    )
    app.add_handler(CommandHandler("cancel", cancel_command, filters=only_new))
    app.add_handler(CommandHandler("forget", forget_command, filters=only_new))
    app.add_handler(CommandHandler("stats", stats_command, filters=only_new))
    app.add_handler(CommandHandler("settings", settings_command, filters=only_new))
    app.add_handler(CallbackQueryHandler(button, pattern=r"^lk:"))
    app.add_handler(MessageReactionHandler(reaction))
    app.add_handler(MessageHandler(only_new & filters.REPLY & filters.TEXT & ~filters.COMMAND, reply_edit))
    app.add_handler(
        MessageHandler(only_new & filters.ChatType.PRIVATE & (filters.PHOTO | filters.Document.IMAGE), photo_hint)
    )
    app.add_error_handler(on_error)


# --- commands ---------------------------------------------------------------------------------------


async def help_command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """/start and /help: what the bot does and how to ask."""
    await _answer(update, context, HELP)


async def presets_command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """/presets: the styles, with emoji and descriptions."""
    await _answer(update, context, state(context).core.presets_text())


async def cancel_command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """/cancel: stop the user's queued and running portraits."""
    await _answer(update, context, await state(context).core.cancel(_origin(update)))


async def forget_command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """/forget: delete everything stored about the user."""
    await _answer(update, context, await state(context).core.forget(_origin(update)))


async def stats_command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """/stats: queue and safety numbers, for admins."""
    await _answer(update, context, await state(context).core.stats(_origin(update)))


async def settings_command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """/settings [name on|off]: this group's settings; chat admins change them (e.g. collaborate)."""
    st = state(context)
    message, chat, user = update.effective_message, update.effective_chat, update.effective_user
    assert message is not None and chat is not None and user is not None
    if chat.type == ChatType.PRIVATE:
        raise UserError(message="Settings are per group: use /settings in the group you want to change.")
    words = (message.text or "").split()[1:]
    if words:
        name, value = _setting_change(words)
        if not st.core.access.is_admin(str(user.id)) and not await _is_chat_admin(context, chat.id, user.id):
            raise UserError(message="Only this chat's admins can change its settings.")
        await st.core.community.update(PLATFORM, str(chat.id), **{name: value})
    current = await st.core.chat_settings(PLATFORM, str(chat.id))
    lines = ["⚙️ Settings for this chat:"]
    lines += [
        f"• {name}: {'on' if getattr(current, name) else 'off'} — {meaning}" for name, meaning in _SETTINGS.items()
    ]
    lines.append("Admins change them with /settings <name> on|off, e.g. /settings collaborate on")
    await _answer(update, context, "\n".join(lines))


async def photo_hint(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """A photo without /portrait in a private chat: say how to ask."""
    await _answer(update, context, _PHOTO_HINT)


# --- requests ---------------------------------------------------------------------------------------


async def portrait(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """/portrait <preset> [prompt] as a photo/file caption, or as a reply to a photo or image file."""
    st = state(context)
    message = update.effective_message
    assert message is not None and update.effective_user is not None
    command = split_command(message.text or message.caption or "")
    if command is None or not _addressed_to_us(message.text or message.caption or "", context.bot.username):
        return
    origin = _origin(update)
    st.core.access.check(origin.user_id, origin.chat_id)
    attachment = selfie_attachment(message) or selfie_attachment(message.reply_to_message)
    if attachment is None:
        raise UserError(message=NEED_SELFIE)
    # Every check (unknown preset, policy, ban) before downloading anything.
    spec = await st.core.check_portrait(origin, parse_portrait_args(command[1]))
    selfie = await download_selfie(attachment, st.download_limit)
    sniff_image(selfie, max_bytes=st.download_limit, max_pixels=st.settings.max_image_pixels)
    key = f"msg:{message.chat_id}:{message.message_id}"
    private = message.chat.type == ChatType.PRIVATE
    await _run_job(st, context, origin, lambda o: st.core.portrait(o, spec, selfie, key=key), private=private)


async def reply_edit(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """A text reply to one of our results: an edit of that result ("make the hair blue")."""
    st = state(context)
    message = update.effective_message
    assert message is not None and message.reply_to_message is not None
    target = message.reply_to_message
    result_id = await st.core.result_for_message(PLATFORM, str(message.chat_id), str(target.message_id))
    if result_id is None:
        return  # an ordinary conversation reply
    origin = _origin(update)
    await st.core.check_may_change(origin, result_id)
    instruction = message.text or ""
    key = f"msg:{message.chat_id}:{message.message_id}"
    private = message.chat.type == ChatType.PRIVATE
    await _run_job(st, context, origin, lambda o: st.core.edit(o, result_id, instruction, key=key), private=private)


async def button(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """🔄 Reroll, ✏️ Edit, ✨ Variations, 📥 Full size under a result."""
    st = state(context)
    query = update.callback_query
    assert query is not None
    parsed = parse_button_id(query.data or "")
    if parsed is None or query.message is None:
        await query.answer("This button no longer works. Please start a new /portrait.", show_alert=True)
        return
    action, result_id = parsed
    # Under an old result the message is inaccessible (chat and id only): the topic comes from Redis.
    chat, message_id = query.message.chat, query.message.message_id
    thread: int | str | None = thread_of(query.message)
    if not query.message.is_accessible:
        thread = await st.core.result_topic(str(chat.id), result_id)
    origin = origin_for(chat, query.from_user, message_id, thread)
    # Callback data is whatever a client sends: every action goes through the core's gate first.
    if action is Action.FULL_SIZE:
        rendered = await st.core.full_size(origin, result_id)
        await _send_full_size(context, origin, rendered, query)
        return
    await st.core.check_may_change(origin, result_id)
    if action is Action.EDIT:
        await query.answer()
        await send_text(context.bot, chat.id, EDIT_HOWTO, reply=message_id, thread=thread)
        return
    key = f"cb:{query.id}"
    private = chat.type == ChatType.PRIVATE
    if action is Action.REROLL:
        await query.answer("🔄 Rerolling…")
        await _run_job(st, context, origin, lambda o: st.core.reroll(o, result_id, key=key), private=private)
    else:
        await query.answer("✨ Making variations…")
        await _run_job(st, context, origin, lambda o: st.core.variations(o, result_id, key=key), private=private)


async def reaction(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """👎 on a result: reroll it (bots see reactions in groups only as admins)."""
    st = state(context)
    event = update.message_reaction
    assert event is not None
    added = {r.emoji for r in event.new_reaction if isinstance(r, ReactionTypeEmoji)} - {
        r.emoji for r in event.old_reaction if isinstance(r, ReactionTypeEmoji)
    }
    if REROLL_EMOJI not in added or event.user is None:  # anonymous admins react as the chat: no owner to check
        return
    chat_id = str(event.chat.id)
    result_id = await st.core.result_for_message(PLATFORM, chat_id, str(event.message_id))
    if result_id is None:
        return
    # Reaction updates carry no topic: answer in the result's own topic.
    thread = await st.core.result_topic(chat_id, result_id)
    origin = origin_for(event.chat, event.user, event.message_id, thread)
    try:
        await st.core.check_may_change(origin, result_id)
    except NotRequester:
        return  # someone else's 👎 is an opinion, not a request: no answer in the chat
    key = f"react:{chat_id}:{event.message_id}:{event.user.id}:{event.date.timestamp():.0f}"
    private = event.chat.type == ChatType.PRIVATE
    await _run_job(st, context, origin, lambda o: st.core.reroll(o, result_id, key=key), private=private)


# --- the error sink ---------------------------------------------------------------------------------


async def on_error(update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
    """The one error sink: log, then answer with the core's text where the user is looking."""
    error = context.error
    assert error is not None
    cause = error.__cause__ if isinstance(error, InProgressMessage) and error.__cause__ is not None else error
    text = state(context).core.error_message(cause)
    if not isinstance(update, Update):
        return  # not caused by an update (e.g. a background task): logged above, nobody to answer
    try:
        if isinstance(error, InProgressMessage):
            await _show_in(context, error.message, text)
        elif update.callback_query is not None:
            await _alert(context, update.callback_query, text)
        elif update.message_reaction is not None:
            event = update.message_reaction
            await send_text(context.bot, event.chat.id, text, reply=event.message_id)
        elif update.effective_message is not None:
            message = update.effective_message
            await send_text(context.bot, message.chat_id, text, reply=message.message_id, thread=thread_of(message))
    except TelegramError as exc:
        log.warning("could not show an error to the user: %s", exc)


# --- helpers ----------------------------------------------------------------------------------------


async def _run_job(
    st: BotState, context: ContextTypes.DEFAULT_TYPE, origin: Origin, submit: Submit, *, private: bool
) -> None:
    """Show one progress message replying to the request, submit, then follow the job in the background."""
    progress = await send_text(
        context.bot, origin.chat_id, WORKING_TEXT, reply=origin.message_id, thread=origin.thread_id
    )
    origin = origin.model_copy(update={"progress_message_id": str(progress.message_id)})
    try:
        ticket = await submit(origin)
    except Exception as exc:
        raise InProgressMessage(progress) from exc
    if ticket.duplicate:  # the same request was seen before (a re-sent update): its own message shows it
        await progress.delete()
        return
    text = st.core.ticket_text(ticket)
    await progress.edit_text(text)
    st.progress.start(ticket.job_id, progress.chat_id, progress.message_id, text, private=private)


async def _send_full_size(
    context: ContextTypes.DEFAULT_TYPE, origin: Origin, rendered: ResultMessage, query: CallbackQuery
) -> None:
    """The original PNG(s) as documents (Telegram recompresses photos), or why not, as an alert."""
    if not rendered.images or rendered.spoiler:  # a document has no spoiler: flagged images stay in the photo
        await query.answer((rendered.text or _NO_FULL_SIZE)[:_ALERT_LIMIT], show_alert=True)
        return
    await query.answer("📥 Sending the full-size file…")
    for index, data in enumerate(rendered.images, start=1):
        await context.bot.send_document(
            int(origin.chat_id),
            data,
            filename=f"likeness-{index}.png",
            reply_parameters=reply_to(origin.message_id),
            message_thread_id=int(origin.thread_id) if origin.thread_id else None,
        )


async def _alert(context: ContextTypes.DEFAULT_TYPE, query: CallbackQuery, text: str) -> None:
    """A pop-up for the presser; if the query was answered already, a reply under the result instead."""
    try:
        await query.answer(text[:_ALERT_LIMIT], show_alert=True)
    except TelegramError:
        if query.message is None:
            raise
        message = query.message
        await send_text(context.bot, message.chat.id, text, reply=message.message_id, thread=thread_of(message))


async def _show_in(context: ContextTypes.DEFAULT_TYPE, message: Message, text: str) -> None:
    try:
        await message.edit_text(text)
    except TelegramError:  # the progress message is gone: answer with a new reply instead
        await send_text(
            context.bot,
            message.chat_id,
            text,
            reply=message.reply_to_message.message_id if message.reply_to_message else None,
            thread=thread_of(message),
        )


async def _answer(update: Update, context: ContextTypes.DEFAULT_TYPE, text: str) -> None:
    message = update.effective_message
    assert message is not None
    await send_text(context.bot, message.chat_id, text, reply=message.message_id, thread=thread_of(message))


def _origin(update: Update) -> Origin:
    assert update.effective_chat is not None and update.effective_user is not None
    message = update.effective_message
    message_id = message.message_id if message is not None else None
    return origin_for(update.effective_chat, update.effective_user, message_id, thread_of(message))


def _setting_change(words: list[str]) -> tuple[str, bool]:
    name = words[0].lower()
    value = _SWITCH.get(words[1].lower()) if len(words) == 2 else None
    if name not in _SETTINGS or value is None:
        raise UserError(message=f"Use /settings <name> on|off with one of: {', '.join(_SETTINGS)}.")
    return name, value


async def _is_chat_admin(context: ContextTypes.DEFAULT_TYPE, chat_id: int, user_id: int) -> bool:
    member = await context.bot.get_chat_member(chat_id, user_id)
    return member.status in (ChatMemberStatus.OWNER, ChatMemberStatus.ADMINISTRATOR)


def _addressed_to_us(text: str, username: str | None) -> bool:
    """`/portrait@OtherBot` in a group is for another bot."""
    match = re.match(r"^\s*/\w+@(\w+)", text)
    return match is None or username is None or match.group(1).lower() == username.lower()
