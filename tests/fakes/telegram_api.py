"""A fake Telegram Bot API server (aiohttp, 127.0.0.1, a free or given port) for end-to-end tests of the real PTB app.

It serves `POST /bot<token>/<method>` (form, multipart with `attach://` files, or JSON bodies; non-string
values arrive as JSON strings, like PTB sends them) and `GET /file/bot<token>/<path>`. Tests inject updates
(`inject`), register downloadable files (`add_file`), make methods fail (`fail_next`), and assert on
`calls` (and `refused`: methods called with another token, answered 401 like Telegram). Messages it returns
look like Telegram's: ids increase per chat, replies carry `reply_to_message`, messages in forum topics carry
`message_thread_id` and `is_topic_message`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

__all__ = ["BOT_USER", "Call", "Failure", "FakeTelegram"]

BOT_USER = {"id": 7000001, "is_bot": True, "first_name": "Likeness", "username": "likeness_test_bot"}


@dataclass
class Call:
    """One API call as the bot made it: params decoded from JSON where they were JSON, files as bytes."""

    method: str
    params: dict[str, Any]
    files: dict[str, bytes] = field(default_factory=dict)
    at: float = field(default_factory=time.monotonic)
    result: Any = None
    error: str | None = None


@dataclass
class Failure:
    """An error answer for the next `count` calls of a method (HTTP status + Telegram description)."""

    status: int
    description: str
    count: int = 1
    parameters: dict[str, Any] | None = None


class FakeTelegram:
    """Use as `async with FakeTelegram(token) as tg:`; point PTB at `tg.api_url`.

    `port=0` takes a free port; a given one lets a test start the server where a bot already looks for it.
    """

    def __init__(self, token: str = "123456:TEST-token", *, port: int = 0) -> None:
        self.token = token
        self.calls: list[Call] = []
        self.refused: list[str] = []
        self.updates: list[dict[str, Any]] = []
        self.allowed_updates_seen: list[Any] = []
        self.webhook: dict[str, Any] | None = None
        self.messages: dict[tuple[int, int], dict[str, Any]] = {}
        self.chats: dict[int, dict[str, Any]] = {}
        self.files: dict[str, bytes] = {}
        self.downloads: list[str] = []
        self._answered: set[str] = set()
        self.owners: dict[int, int] = {}
        self.admins: dict[int, set[int]] = {}
        self.failures: dict[str, list[Failure]] = {}
        self._message_ids: dict[int, itertools.count[int]] = {}
        self._update_ids = itertools.count(1)
        self._file_ids = itertools.count(1)
        self._changed = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self.port = port

    # --- lifecycle ---------------------------------------------------------------------------------

    async def __aenter__(self) -> FakeTelegram:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/bot{token}/{method}", self._api)
        app.router.add_get("/file/bot{token}/{path:.+}", self._file)
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.5, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def __aexit__(self, *exc: object) -> None:
        async with self._changed:
            self._changed.notify_all()
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # --- what tests do -----------------------------------------------------------------------------

    def chat(self, chat_id: int, kind: str = "private", *, is_forum: bool = False, title: str = "") -> dict[str, Any]:
        """Register (or return) a chat; message ids are counted per chat like Telegram does."""
        if chat_id not in self.chats:
            chat: dict[str, Any] = {"id": chat_id, "type": kind}
            if kind == "private":
                chat["first_name"] = f"user{chat_id}"
            else:
                chat["title"] = title or f"group{chat_id}"
            if is_forum:
                chat["is_forum"] = True
            self.chats[chat_id] = chat
        return self.chats[chat_id]

    def new_message_id(self, chat_id: int) -> int:
        return next(self._message_ids.setdefault(chat_id, itertools.count(1)))

    def add_file(self, data: bytes, *, size: int | None = None) -> dict[str, Any]:
        """Store a downloadable file; returns `file_id`, `file_unique_id`, `file_size` for builders."""
        n = next(self._file_ids)
        file_id = f"file-{n}"
        self.files[file_id] = data
        return {"file_id": file_id, "file_unique_id": f"u{n}", "file_size": len(data) if size is None else size}

    async def inject(self, kind: str, payload: dict[str, Any]) -> int:
        """Queue an update (`message`, `callback_query`, `message_reaction`, ...); returns its update_id.

        Messages are remembered so the bot's replies to them can quote them.
        """
        if kind in ("message", "edited_message"):
            self.messages[(payload["chat"]["id"], payload["message_id"])] = payload
        update_id = next(self._update_ids)
        async with self._changed:
            self.updates.append({"update_id": update_id, kind: payload})
            self._changed.notify_all()
        return update_id

    def fail_next(self, method: str, status: int, description: str, *, count: int = 1, **parameters: Any) -> None:
        """Answer the next `count` calls of `method` with an error; `parameters` as Telegram's (retry_after=...)."""
        self.failures.setdefault(method, []).append(Failure(status, description, count, parameters or None))

    def calls_of(self, *methods: str, chat_id: int | None = None) -> list[Call]:
        return [
            c
            for c in self.calls
            if c.method in methods and (chat_id is None or int(c.params.get("chat_id", 0)) == chat_id)
        ]

    async def wait_for(self, predicate: Callable[[], Any], *, timeout: float = 15.0, what: str = "condition") -> Any:
        """Wait until `predicate()` is truthy (re-checked on every call); returns its value."""

        async def wait() -> Any:
            async with self._changed:
                while not (value := predicate()):
                    await self._changed.wait()
                return value

        try:
            return await asyncio.wait_for(wait(), timeout)
        except TimeoutError:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}; calls: {self.summary()}") from None

    async def wait_call(self, method: str, *, count: int = 1, chat_id: int | None = None, timeout: float = 15.0):
        """Wait for the `count`-th call of `method` and return the calls so far."""
        return await self.wait_for(
            lambda: (found := self.calls_of(method, chat_id=chat_id)) and len(found) >= count and found,
            timeout=timeout,
            what=f"{count}× {method}",
        )

    def summary(self) -> list[str]:
        skip = {"getUpdates", "getMe", "deleteWebhook", "setMyCommands"}
        return [
            f"{c.method}:{c.params.get('text') or c.params.get('caption') or ''}"[:80]
            for c in self.calls
            if c.method not in skip
        ]

    # --- HTTP ----------------------------------------------------------------------------------------

    async def _api(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != self.token:
            async with self._changed:
                self.refused.append(request.match_info["method"])
                self._changed.notify_all()
            return _error(401, "Unauthorized")
        method = request.match_info["method"]
        params, files = await _read_params(request)
        call = Call(method, params, files)
        if method != "getUpdates":
            await self._record(call)
        queued = self.failures.get(method)
        if queued:
            failure = queued[0]
            failure.count -= 1
            if failure.count <= 0:
                queued.pop(0)
            call.error = failure.description
            return _error(failure.status, failure.description, failure.parameters)
        handler = getattr(self, f"_m_{method}", None)
        if handler is None:
            return _error(404, "Not Found: method not found")
        try:
            result = await handler(params, files)
        except _ApiError as exc:
            call.error = exc.description
            return _error(400, exc.description)
        call.result = result
        return web.json_response({"ok": True, "result": result})

    async def _file(self, request: web.Request) -> web.StreamResponse:
        if request.match_info["token"] != self.token:
            return web.Response(status=401)
        path = request.match_info["path"]
        file_id = path.rsplit("/", 1)[-1]
        self.downloads.append(file_id)
        if file_id not in self.files:
            return web.Response(status=404)
        return web.Response(body=self.files[file_id], content_type="application/octet-stream")

    async def _record(self, call: Call) -> None:
        async with self._changed:
            self.calls.append(call)
            self._changed.notify_all()

    # --- methods -------------------------------------------------------------------------------------

    async def _m_getMe(self, params: dict[str, Any], files: dict[str, bytes]) -> Any:
        return {
            **BOT_USER,
            "can_join_groups": True,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
        }

    async def _m_deleteWebhook(self, params: dict[str, Any], files: dict[str, bytes]) -> Any:
        self.webhook = None
        return True

    async def _m_setWebhook(self, params: dict[str, Any], files: dict[str, bytes]) -> Any:
        self.webhook = params
        return True

    async def _m_setMyCommands(self, params: dict[str, Any], files: dict[str, bytes]) -> Any:
        return True

    async def _m_getUpdates(self, params: dict[str, Any], files: dict[str, bytes]) -> Any:
        offset = int(params.get("offset") or 0)
        timeout = float(params.get("timeout") or 0)
        if "allowed_updates" in params:
            async with self._changed:
                self.allowed_updates_seen.append(params["allowed_updates"])
                self._changed.notify_all()

        def pending() -> list[dict[str, Any]]:
            return [u for u in self.updates if u["update_id"] >= offset]

        async with self._changed:
            if not pending() and timeout > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait_for(lambda: bool(pending())), timeout)
            found = pending()
        # Telegram forgets updates once a later offset confirms them.
        self.updates = [u for u in self.updates if u["update_id"] >= offset]
        return found[:100]

    async def _m_sendMessage(self, params: dict[str, Any], files: dict[str, bytes]) -> Any:
        return self._new_message(params, text=str(params["text"]))

    async def _m_sendPhoto(self, params: dict[str, Any], files: dict[str, bytes]) -> Any:
        data = self._upload(params["photo"], files)
        return self._new_message(
            params,
            caption=params.get("caption"),
            photo=self._photo(data),
            has_media_spoiler=bool(params.get("has_spoiler")),
        )

    async def _m_sendDocument(self, params: dict[str, Any], files: dict[str, bytes]) -> Any:
        data = self._upload(params["document"], files)
        name = next((n for n in files if n == "document"), "document")
        stored = self.add_file(data)
        document = {**stored, "file_name": params.get("filename") or name, "mime_type": "image/png"}
        return self._new_message(params, caption=params.get("caption"), document=document)

    async def _m_sendMediaGroup(self, params: dict[str, Any], files: dict[str, bytes]) -> Any:
        media = params["media"]
        if not 2 <= len(media) <= 10:
            raise _ApiError("Bad Request: wrong number of media specified")
        group = f"mg{next(self._file_ids)}"
        sent = []
        for item in media:
            data = self._upload(item["media"], files)
            sent.append(
                self._new_message(
                    params,
                    caption=item.get("caption"),
                    photo=self._photo(data),
                    media_group_id=group,
                    has_media_spoiler=bool(item.get("has_spoiler")),
                )
            )
        return sent

    async def _m_editMessageText(self, params: dict[str, Any], files: dict[str, bytes]) -> Any:
        key = (int(params["chat_id"]), int(params["message_id"]))
        message = self.messages.get(key)
        if message is None or message.get("from", {}).get("id") != BOT_USER["id"]:
            raise _ApiError("Bad Request: message to edit not found")
        if message.get("text") == params["text"] and message.get("reply_markup") == params.get("reply_markup"):
            raise _ApiError(
                "Bad Request: message is not modified: specified new message content and reply markup are exactly "
                "the same as a current content and reply markup of the message"
            )
        message["text"] = params["text"]
        message["edit_date"] = int(time.time())
        return message

    async def _m_deleteMessage(self, params: dict[str, Any], files: dict[str, bytes]) -> Any:
        key = (int(params["chat_id"]), int(params["message_id"]))
        if self.messages.pop(key, None) is None:
            raise _ApiError("Bad Request: message to delete not found")
        return True

    async def _m_answerCallbackQuery(self, params: dict[str, Any], files: dict[str, bytes]) -> Any:
        if params["callback_query_id"] in self._answered:
            raise _ApiError("Bad Request: query is too old and response timeout expired or query ID is invalid")
        self._answered.add(params["callback_query_id"])
        return True

    async def _m_setMessageReaction(self, params: dict[str, Any], files: dict[str, bytes]) -> Any:
        return True

    async def _m_sendChatAction(self, params: dict[str, Any], files: dict[str, bytes]) -> Any:
        return True

    async def _m_getChatMember(self, params: dict[str, Any], files: dict[str, bytes]) -> Any:
        chat_id, user_id = int(params["chat_id"]), int(params["user_id"])
        member = {"user": {"id": user_id, "is_bot": False, "first_name": f"user{user_id}"}}
        if user_id == self.owners.get(chat_id):
            return {**member, "status": "creator", "is_anonymous": False}
        if user_id in self.admins.get(chat_id, set()):
            rights = (
                "can_be_edited",
                "is_anonymous",
                "can_manage_chat",
                "can_delete_messages",
                "can_manage_video_chats",
                "can_restrict_members",
                "can_promote_members",
                "can_change_info",
                "can_invite_users",
                "can_post_stories",
                "can_edit_stories",
                "can_delete_stories",
            )
            return {**member, "status": "administrator", **dict.fromkeys(rights, False), "can_manage_chat": True}
        return {**member, "status": "member"}

    async def _m_getFile(self, params: dict[str, Any], files: dict[str, bytes]) -> Any:
        file_id = params["file_id"]
        if file_id not in self.files:
            raise _ApiError("Bad Request: invalid file_id")
        data = self.files[file_id]
        if len(data) > 20 * 1024 * 1024:
            raise _ApiError("Bad Request: file is too big")
        return {
            "file_id": file_id,
            "file_unique_id": f"u-{file_id}",
            "file_size": len(data),
            "file_path": f"photos/{file_id}",
        }

    # --- helpers -------------------------------------------------------------------------------------

    def _upload(self, value: Any, files: dict[str, bytes]) -> bytes:
        if isinstance(value, str) and value.startswith("attach://"):
            return files[value.removeprefix("attach://")]
        if isinstance(value, str) and value in self.files:
            return self.files[value]
        for data in files.values():
            return data
        raise _ApiError("Bad Request: there is no photo in the request")

    def _photo(self, data: bytes) -> list[dict[str, Any]]:
        stored = self.add_file(data)
        return [{**stored, "width": 64, "height": 64}]

    def _new_message(self, params: dict[str, Any], **content: Any) -> dict[str, Any]:
        chat_id = int(params["chat_id"])
        chat = self.chats.get(chat_id) or self.chat(chat_id, "private" if chat_id > 0 else "supergroup")
        message: dict[str, Any] = {
            "message_id": self.new_message_id(chat_id),
            "date": int(time.time()),
            "chat": chat,
            "from": BOT_USER,
            **{k: v for k, v in content.items() if v not in (None, False)},
        }
        thread = params.get("message_thread_id")
        if thread is not None:
            if not chat.get("is_forum"):
                raise _ApiError("Bad Request: message thread not found")
            message["message_thread_id"] = int(thread)
            message["is_topic_message"] = True
        reply = params.get("reply_parameters")
        if reply is not None:
            target = self.messages.get((chat_id, int(reply["message_id"])))
            if target is not None:
                message["reply_to_message"] = {k: v for k, v in target.items() if k != "reply_to_message"}
            elif not reply.get("allow_sending_without_reply"):
                raise _ApiError("Bad Request: message to be replied not found")
        if "reply_markup" in params:
            message["reply_markup"] = params["reply_markup"]
        self.messages[(chat_id, message["message_id"])] = message
        return message


class _ApiError(Exception):
    def __init__(self, description: str) -> None:
        super().__init__(description)
        self.description = description


def _error(status: int, description: str, parameters: dict[str, Any] | None = None) -> web.Response:
    body: dict[str, Any] = {"ok": False, "error_code": status, "description": description}
    if parameters:
        body["parameters"] = parameters
    return web.json_response(body, status=status)


async def _read_params(request: web.Request) -> tuple[dict[str, Any], dict[str, bytes]]:
    """Decode a Bot API request body: JSON, urlencoded or multipart; JSON-string values are decoded."""
    params: dict[str, Any] = {}
    files: dict[str, bytes] = {}
    if request.content_type == "application/json":
        params = await request.json()
    elif request.can_read_body:
        form = await request.post()
        for name, value in form.items():
            if isinstance(value, web.FileField):
                files[name] = value.file.read()
                params.setdefault(name, f"attach://{name}")
            else:
                params[name] = _maybe_json(name, str(value))
    params.update({k: _maybe_json(k, v) for k, v in request.query.items()})
    return params, files


# Parameters PTB sends as JSON strings (every non-string value); plain strings (text, captions) stay text.
_JSON_PARAMS = {
    "reply_parameters",
    "reply_markup",
    "media",
    "allowed_updates",
    "commands",
    "reaction",
    "entities",
    "caption_entities",
    "link_preview_options",
    "scope",
}


def _maybe_json(name: str, value: str) -> Any:
    if name in _JSON_PARAMS or value in ("true", "false"):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value
