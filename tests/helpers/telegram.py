"""Builders for Telegram updates and a harness that runs the real bot against `tests.fakes.telegram_api`.

Builders return Bot API JSON (what Telegram would send) and register messages/files with the fake server.
`TelegramHarness` starts and stops the bot (`run_telegram`) and an in-process worker on the tiny engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import itertools
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from likeness.bot.telegram import run_telegram
from likeness.config import Settings
from likeness.worker import worker_in_loop
from tests.fakes.telegram_api import Call, FakeTelegram
from tests.helpers.faces import astronaut
from tests.helpers.stack import Borrowed

TOKEN = "123456:TEST-secret-token-abc"

__all__ = [
    "TOKEN",
    "TelegramHarness",
    "assert_no_unexpected_errors",
    "button_data",
    "callback_query",
    "document_message",
    "edit_answer",
    "harness",
    "image_bytes",
    "photo_message",
    "portrait_result",
    "reaction",
    "reply_id",
    "result_message",
    "text_message",
    "user",
]

_query_ids = itertools.count(1)


def user(user_id: int, name: str = "") -> dict[str, Any]:
    return {"id": user_id, "is_bot": False, "first_name": name or f"user{user_id}"}


def image_bytes(size: int | None = None, fmt: str = "JPEG") -> bytes:
    """A selfie: a real face photo (the engine analyses every selfie), optionally shrunk (thumbnails)."""
    image = astronaut()
    if size is not None:
        image = image.resize((size, size))
    buf = io.BytesIO()
    image.save(buf, fmt)
    return buf.getvalue()


def _message(
    tg: FakeTelegram, chat: dict[str, Any], sender: dict[str, Any], *, thread_id: int | None, reply_to: Any
) -> dict[str, Any]:
    message: dict[str, Any] = {
        "message_id": tg.new_message_id(chat["id"]),
        "date": int(time.time()),
        "chat": chat,
        "from": sender,
    }
    if thread_id is not None:
        message["message_thread_id"] = thread_id
        message["is_topic_message"] = True
    if reply_to is not None:
        message["reply_to_message"] = {k: v for k, v in reply_to.items() if k != "reply_to_message"}
    return message


def _command_entities(text: str) -> list[dict[str, Any]]:
    if not text.startswith("/"):
        return []
    return [{"type": "bot_command", "offset": 0, "length": len(text.split()[0])}]


def text_message(
    tg: FakeTelegram,
    chat: dict[str, Any],
    sender: dict[str, Any],
    text: str,
    *,
    reply_to: dict[str, Any] | None = None,
    thread_id: int | None = None,
) -> dict[str, Any]:
    """A text message; commands get their `bot_command` entity like Telegram sends it."""
    message = _message(tg, chat, sender, thread_id=thread_id, reply_to=reply_to)
    message["text"] = text
    if entities := _command_entities(text):
        message["entities"] = entities
    return message


def photo_message(
    tg: FakeTelegram,
    chat: dict[str, Any],
    sender: dict[str, Any],
    *,
    caption: str | None = None,
    image: bytes | None = None,
    thread_id: int | None = None,
    reply_to: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A photo message (a thumbnail and the full size, as Telegram sends them) with an optional caption."""
    data = image or image_bytes()
    thumb = tg.add_file(image_bytes(size=32))
    full = tg.add_file(data)
    message = _message(tg, chat, sender, thread_id=thread_id, reply_to=reply_to)
    message["photo"] = [{**thumb, "width": 32, "height": 32}, {**full, "width": 96, "height": 96}]
    if caption is not None:
        message["caption"] = caption
        if entities := _command_entities(caption):
            message["caption_entities"] = entities
    return message


def document_message(
    tg: FakeTelegram,
    chat: dict[str, Any],
    sender: dict[str, Any],
    data: bytes,
    *,
    mime_type: str = "image/png",
    file_name: str = "selfie.png",
    caption: str | None = None,
    size: int | None = None,
) -> dict[str, Any]:
    """A file sent "as document"; `size` overrides the announced file_size (for over-limit files)."""
    stored = tg.add_file(data, size=size)
    message = _message(tg, chat, sender, thread_id=None, reply_to=None)
    message["document"] = {**stored, "file_name": file_name, "mime_type": mime_type}
    if caption is not None:
        message["caption"] = caption
        if entities := _command_entities(caption):
            message["caption_entities"] = entities
    return message


def callback_query(sender: dict[str, Any], message: dict[str, Any], data: str) -> dict[str, Any]:
    """A press of an inline button under `message` (as stored by the fake server)."""
    return {
        "id": f"cq{next(_query_ids)}",
        "from": sender,
        "message": message,
        "chat_instance": f"ci{message['chat']['id']}",
        "data": data,
    }


def reaction(
    chat: dict[str, Any], message_id: int, sender: dict[str, Any], new: list[str], old: list[str] | None = None
) -> dict[str, Any]:
    """A `message_reaction` update: the user's reactions on a message changed from `old` to `new`."""
    return {
        "chat": chat,
        "message_id": message_id,
        "user": sender,
        "date": int(time.time()),
        "old_reaction": [{"type": "emoji", "emoji": e} for e in old or []],
        "new_reaction": [{"type": "emoji", "emoji": e} for e in new],
    }


@dataclass
class TelegramHarness:
    """The bot (real PTB app on the fake API) and a worker (tiny engine), started and stopped by tests."""

    tg: FakeTelegram
    settings: Settings
    engine: Any
    consumer_name: str = "test-bot"
    claim_idle_s: float = 60.0
    _bot: tuple[asyncio.Task[None], asyncio.Event] | None = None
    _worker: contextlib.AsyncExitStack | None = None
    bot_runs: int = field(default=0)

    async def start_bot(self, settings: Settings | None = None, *, ready: Callable[[], Any] | None = None) -> None:
        """Run the bot in a task; returns once it polls (or once `ready()` is true, e.g. for webhooks)."""
        assert self._bot is None, "bot already running"
        stop = asyncio.Event()
        seen = len(self.tg.allowed_updates_seen)
        ready = ready or (lambda: len(self.tg.allowed_updates_seen) > seen)
        task = asyncio.create_task(
            run_telegram(
                settings or self.settings,
                stop=stop,
                consumer_name=self.consumer_name,
                poll_timeout_s=0.5,
                claim_idle_s=self.claim_idle_s,
            )
        )
        self._bot = (task, stop)
        self.bot_runs += 1
        deadline = time.monotonic() + 15
        while not ready():
            if task.done():
                await task  # raises the startup error
            assert time.monotonic() < deadline, "bot did not start polling"
            await asyncio.sleep(0.02)

    async def stop_bot(self, *, cancel: bool = False) -> None:
        """Stop like the command does (`stop` event), or like `likeness up` does (cancel the task)."""
        if self._bot is None:
            return
        task, stop = self._bot
        self._bot = None
        if cancel:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(task, 15)
            return
        stop.set()
        await asyncio.wait_for(task, 15)

    async def start_worker(self) -> None:
        assert self._worker is None, "worker already running"
        shared = Borrowed(self.engine)
        self._worker = contextlib.AsyncExitStack()
        await self._worker.enter_async_context(worker_in_loop(self.settings, engine_factory=lambda _s: shared))

    async def stop_worker(self) -> None:
        if self._worker is not None:
            worker, self._worker = self._worker, None
            await worker.aclose()

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.stop_bot()
        await self.stop_worker()

    # --- conveniences for tests ------------------------------------------------------------------------

    async def send(self, message: dict[str, Any]) -> dict[str, Any]:
        await self.tg.inject("message", message)
        return message

    def texts(self, chat_id: int | None = None) -> list[str]:
        """Every text the bot sent or edited to (in order), for assertions on what the user saw."""
        return [str(c.params["text"]) for c in self.tg.calls_of("sendMessage", "editMessageText", chat_id=chat_id)]


@contextlib.asynccontextmanager
async def harness(tg: FakeTelegram, settings: Settings, engine: Any, **kwargs: Any) -> AsyncIterator[TelegramHarness]:
    h = TelegramHarness(tg, settings, engine, **kwargs)
    try:
        yield h
    finally:
        await h.close()


def reply_id(call: Call) -> int | None:
    """The message a sent message quotes (replies to), if any."""
    reply = call.params.get("reply_parameters")
    return int(reply["message_id"]) if reply else None


def button_data(call: Call) -> list[str]:
    """The callback data of the inline buttons under a sent message."""
    markup = call.params.get("reply_markup") or {}
    return [b["callback_data"] for row in markup.get("inline_keyboard", []) for b in row]


async def portrait_result(
    h: TelegramHarness, chat: dict[str, Any], who: dict[str, Any], caption: str = "/portrait ghibli", **kwargs: Any
) -> tuple[dict[str, Any], Call]:
    """Send a captioned photo and wait for its result photo; returns (request, sendPhoto call)."""
    before = len(h.tg.calls_of("sendPhoto"))
    request = await h.send(photo_message(h.tg, chat, who, caption=caption, **kwargs))
    calls = await h.tg.wait_call("sendPhoto", count=before + 1, timeout=30)
    return request, calls[-1]


def result_message(tg: FakeTelegram, call: Call) -> dict[str, Any]:
    """The result message (as the fake server stored it) that a sendPhoto call created."""
    chat_id = int(call.params["chat_id"])
    ours = [m for (c, _), m in tg.messages.items() if c == chat_id and m.get("photo") and m.get("reply_markup")]
    return next(m for m in reversed(ours) if m.get("caption") == call.params.get("caption"))


def assert_no_unexpected_errors(caplog: Any) -> None:
    """A handler or delivery that crashed is logged at ERROR by the bot's error sink: a test must see none."""
    bad = [
        f"{r.name}: {r.getMessage()}"
        for r in caplog.records
        if r.levelno >= logging.ERROR and r.name.startswith(("likeness.bot", "telegram"))
    ]
    assert not bad, bad


def edit_answer(tg: FakeTelegram, edit: dict[str, Any]) -> Any:
    """The bot's final answer to an edit request `edit`: the edited image (a photo replying to it, with the
    result buttons) or, while the engine has no edits, the worker's clear refusal. None until it came."""
    for call in tg.calls_of("sendPhoto", "sendMessage"):
        reply = call.params.get("reply_parameters")
        if not reply or int(reply["message_id"]) != edit["message_id"]:
            continue
        if call.method == "sendPhoto":
            assert call.params.get("reply_markup"), "an edited image comes with the buttons"
            return call
        if "Edits are not available yet" in call.params["text"]:
            return call
    return None
