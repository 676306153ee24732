"""A fake Discord (REST + gateway websocket + CDN) on 127.0.0.1 for end-to-end tests of the real discord.py client.

REST lives under `/api/v10` (point `LIKENESS_DISCORD_API_URL` at `fake.api_url`): users/@me, the application,
`GET /gateway/bot` (→ this server's `/gateway`, 1 shard), bulk command overwrite, interaction callbacks,
interaction webhooks (`@original`, follow-ups), channel messages (JSON or multipart with files), channels,
DMs. Every answer has Content-Type exactly `application/json` (discord.py parses nothing else). The gateway
speaks plain-text JSON frames (discord.py asks for zlib-stream but reads text frames as they come): HELLO,
IDENTIFY → READY + GUILD_CREATE (a text channel and an age-restricted one), HEARTBEAT → ACK, and
`dispatch()` for events. Attachments are served from `/cdn/...`.

Tests read `requests` (every REST call with its JSON and files), `messages` (the channel as Discord would
show it), `commands`/`command_puts`, and can make channels refuse posts (`forbidden_channels`) or tokens
expire (`expired_tokens`).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import WSMsgType, web

__all__ = [
    "APP_ID",
    "BOT_USER",
    "GUILD_ID",
    "NSFW_CHANNEL_ID",
    "TEXT_CHANNEL_ID",
    "FakeDiscord",
    "Request",
    "snowflake",
]

DISCORD_EPOCH_MS = 1420070400000
_counter = itertools.count(1)


def snowflake(at: float | None = None) -> int:
    """A Discord id whose timestamp is `at` (default now): discord.py derives `created_at` from it."""
    ms = int((time.time() if at is None else at) * 1000) - DISCORD_EPOCH_MS
    return (ms << 22) | (next(_counter) % 4096)


APP_ID = 900000000000000001
GUILD_ID = 900000000000000002
TEXT_CHANNEL_ID = 900000000000000003
NSFW_CHANNEL_ID = 900000000000000004
BOT_USER = {
    "id": str(APP_ID),
    "username": "Likeness",
    "discriminator": "0",
    "global_name": None,
    "avatar": None,
    "bot": True,
}
PERMISSIONS_ALL = str((1 << 50) - 1)
_PERMISSION_ERROR = {"message": "Missing Permissions", "code": 50013}
_UNKNOWN_CHANNEL = {"message": "Unknown Channel", "code": 10003}
_BAD_TOKEN = {"message": "Invalid Webhook Token", "code": 50027}


@dataclass
class Request:
    """One REST call as the bot made it."""

    method: str
    path: str
    json: Any = None
    files: list[tuple[str, bytes]] = field(default_factory=list)
    at: float = field(default_factory=time.monotonic)


def _now_iso() -> str:
    return datetime.now(UTC).isoformat()


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=json.dumps(data).encode(), status=status, headers={"Content-Type": "application/json"})


class FakeDiscord:
    """`async with FakeDiscord() as fake:`; the bot's token is whatever it sends (not checked)."""

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self.commands: list[dict[str, Any]] = []
        self.command_puts = 0
        self.messages: dict[int, dict[str, Any]] = {}
        self.files: dict[int, list[bytes]] = {}  # message id -> bytes of its attached files
        self.channels: dict[int, dict[str, Any]] = {
            TEXT_CHANNEL_ID: self._channel(TEXT_CHANNEL_ID, "portraits", nsfw=False),
            NSFW_CHANNEL_ID: self._channel(NSFW_CHANNEL_ID, "after-dark", nsfw=True),
        }
        self.interactions: dict[str, dict[str, Any]] = {}  # token -> {id, channel_id, original, ephemeral, ...}
        self.forbidden_channels: set[int] = set()
        self.failing_posts: list[int] = []  # statuses for the next channel posts (e.g. 503: Discord is down)
        self.threads: list[dict[str, Any]] = []
        self.expired_tokens: set[str] = set()
        self.cdn: dict[str, tuple[bytes, str]] = {}
        self.downloads: list[str] = []
        self.cdn_delay_s = 0.0  # a slow CDN: the bot must acknowledge before it downloads
        self.identifies: list[dict[str, Any]] = []
        self.gateway_urls: list[str] = []
        self._sockets: list[web.WebSocketResponse] = []
        self._seq = itertools.count(1)
        self._changed = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self.port = 0

    # --- lifecycle ---------------------------------------------------------------------------------

    async def __aenter__(self) -> FakeDiscord:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_get("/gateway", self._gateway)
        app.router.add_get("/cdn/{name}", self._cdn)
        app.router.add_route("*", "/api/v10/{path:.*}", self._rest)
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.5, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def __aexit__(self, *exc: object) -> None:
        for ws in list(self._sockets):
            await ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_url(self) -> str:
        return f"{self.base_url}/api/v10"

    # --- test helpers ------------------------------------------------------------------------------

    def add_attachment(self, data: bytes, filename: str = "selfie.png", content_type: str | None = "image/png",
                       size: int | None = None) -> dict[str, Any]:  # fmt: skip
        """An attachment payload whose URL is served by this fake's CDN (`size` may lie, like a client could)."""
        attachment_id = str(snowflake())
        self.cdn[f"{attachment_id}-{filename}"] = (data, content_type or "application/octet-stream")
        payload: dict[str, Any] = {
            "id": attachment_id,
            "filename": filename,
            "size": len(data) if size is None else size,
            "url": f"{self.base_url}/cdn/{attachment_id}-{filename}",
            "proxy_url": f"{self.base_url}/cdn/{attachment_id}-{filename}",
        }
        if content_type is not None:
            payload["content_type"] = content_type
        return payload

    async def dispatch(self, event: str, data: dict[str, Any]) -> None:
        """Send a gateway event to every connected shard."""
        for ws in list(self._sockets):
            await ws.send_str(json.dumps({"op": 0, "t": event, "s": next(self._seq), "d": data}))

    def register_interaction(self, payload: dict[str, Any]) -> None:
        self.interactions[payload["token"]] = {
            "id": payload["id"],
            "channel_id": int(payload["channel_id"]),
            "original": None,
            "responses": [],
            "followups": [],
            "edits": [],
        }

    async def wait_for(self, predicate: Callable[[], Any], timeout: float = 10.0) -> Any:
        """Wait until `predicate()` is truthy (checked after every request); returns its value."""

        async def wait() -> Any:
            async with self._changed:
                while not (value := predicate()):
                    await self._changed.wait()
                return value

        return await asyncio.wait_for(wait(), timeout)

    def calls(self, method: str, path_part: str) -> list[Request]:
        return [r for r in self.requests if r.method == method and path_part in r.path]

    def channel_messages(self, channel_id: int) -> list[dict[str, Any]]:
        return [m for m in self.messages.values() if int(m["channel_id"]) == channel_id]

    def message(self, message_id: int | str) -> dict[str, Any]:
        return self.messages[int(message_id)]

    # --- gateway -----------------------------------------------------------------------------------

    async def _gateway(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.gateway_urls.append(str(request.rel_url))
        self._sockets.append(ws)
        await ws.send_str(json.dumps({"op": 10, "d": {"heartbeat_interval": 41250}}))
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                frame = json.loads(msg.data)
                if frame["op"] == 1:
                    await ws.send_str(json.dumps({"op": 11}))
                elif frame["op"] == 2:
                    self.identifies.append(frame["d"])
                    await self._ready(ws, frame["d"])
                    async with self._changed:
                        self._changed.notify_all()
        finally:
            self._sockets.remove(ws)
        return ws

    async def _ready(self, ws: web.WebSocketResponse, identify: dict[str, Any]) -> None:
        shard = identify.get("shard", [0, 1])
        ready = {
            "v": 10,
            "user": BOT_USER,
            "guilds": [{"id": str(GUILD_ID), "unavailable": True}],
            "session_id": "fake-session",
            "resume_gateway_url": f"ws://127.0.0.1:{self.port}/gateway",
            "shard": shard,
            "application": {"id": str(APP_ID), "flags": 0},
        }
        await ws.send_str(json.dumps({"op": 0, "t": "READY", "s": next(self._seq), "d": ready}))
        guild = {
            "id": str(GUILD_ID),
            "name": "Likeness Test Server",
            "icon": None,
            "owner_id": "1",
            "unavailable": False,
            "member_count": 2,
            "large": False,
            "features": [],
            "emojis": [],
            "stickers": [],
            "roles": [
                {
                    "id": str(GUILD_ID),
                    "name": "@everyone",
                    "permissions": PERMISSIONS_ALL,
                    "position": 0,
                    "color": 0,
                    "hoist": False,
                    "managed": False,
                    "mentionable": False,
                    "flags": 0,
                }
            ],
            "channels": list(self.channels.values()),
            "threads": [],
            "members": [],
            "voice_states": [],
            "presences": [],
            "joined_at": _now_iso(),
            "preferred_locale": "en-US",
            "premium_tier": 0,
            "verification_level": 0,
            "default_message_notifications": 0,
            "explicit_content_filter": 0,
            "mfa_level": 0,
            "nsfw_level": 0,
            "system_channel_flags": 0,
        }
        await ws.send_str(json.dumps({"op": 0, "t": "GUILD_CREATE", "s": next(self._seq), "d": guild}))

    @staticmethod
    def _channel(channel_id: int, name: str, *, nsfw: bool) -> dict[str, Any]:
        return {
            "id": str(channel_id),
            "type": 0,
            "guild_id": str(GUILD_ID),
            "name": name,
            "position": 0,
            "permission_overwrites": [],
            "nsfw": nsfw,
            "parent_id": None,
            "topic": None,
            "last_message_id": None,
            "rate_limit_per_user": 0,
        }

    # --- CDN ---------------------------------------------------------------------------------------

    async def _cdn(self, request: web.Request) -> web.Response:
        self.downloads.append(request.match_info["name"])
        await asyncio.sleep(self.cdn_delay_s)
        item = self.cdn.get(request.match_info["name"])
        if item is None:
            return web.Response(status=404)
        data, content_type = item
        return web.Response(body=data, headers={"Content-Type": content_type})

    # --- REST --------------------------------------------------------------------------------------

    async def _rest(self, request: web.Request) -> web.Response:
        body, files = await self._read(request)
        path = "/" + request.match_info["path"]
        self.requests.append(Request(request.method, path, body, files))
        try:
            return await self._route(request.method, path, body, files, request)
        finally:
            async with self._changed:
                self._changed.notify_all()

    async def _read(self, request: web.Request) -> tuple[Any, list[tuple[str, bytes]]]:
        files: list[tuple[str, bytes]] = []
        if request.content_type.startswith("multipart/"):
            body: Any = None
            reader = await request.multipart()
            async for part in reader:  # type: ignore[union-attr]
                if part.name == "payload_json":  # type: ignore[union-attr]
                    body = json.loads(await part.text())  # type: ignore[union-attr]
                else:
                    files.append((part.filename or "", bytes(await part.read())))  # type: ignore[union-attr]
            return body, files
        raw = await request.read()
        return (json.loads(raw) if raw else None), files

    async def _route(
        self, method: str, path: str, body: Any, files: list[tuple[str, bytes]], request: web.Request
    ) -> web.Response:
        parts = path.strip("/").split("/")
        if path == "/users/@me" and method == "GET":
            return _json(BOT_USER)
        if path == "/oauth2/applications/@me":
            return _json(self._application())
        if path == "/gateway/bot":
            return _json(
                {
                    "url": f"ws://127.0.0.1:{self.port}/gateway",
                    "shards": 1,
                    "session_start_limit": {"total": 1000, "remaining": 999, "reset_after": 0, "max_concurrency": 1},
                }
            )
        if parts[:1] == ["applications"] and parts[2:] == ["commands"] and method == "PUT":
            self.command_puts += 1
            self.commands = [
                {"description": "", **c, "id": str(snowflake()), "application_id": str(APP_ID), "version": "1"}
                for c in body
            ]
            return _json(self.commands)
        if parts[:1] == ["interactions"] and parts[-1] == "callback":
            return self._callback(parts[2], body, files)
        if parts[:1] == ["webhooks"]:
            return self._webhook(method, parts, body, files)
        if parts[:1] == ["channels"]:
            return self._channel_route(method, parts, body, files)
        if path == "/users/@me/channels" and method == "POST":
            dm_id = int(body["recipient_id"]) + 1
            channel = {"id": str(dm_id), "type": 1, "recipients": [_user(int(body["recipient_id"]))]}
            self.channels.setdefault(dm_id, channel)
            return _json(channel)
        return _json({"message": f"fake Discord has no {method} {path}", "code": 0}, status=404)

    def _application(self) -> dict[str, Any]:
        return {
            "id": str(APP_ID),
            "name": "Likeness",
            "description": "",
            "icon": None,
            "bot_public": True,
            "bot_require_code_grant": False,
            "owner": _user(1),
            "verify_key": "0" * 64,
            "flags": 0,
            "team": None,
            "summary": "",
        }

    def _callback(self, token: str, body: dict[str, Any], files: list[tuple[str, bytes]]) -> web.Response:
        record = self.interactions.get(token)
        if record is None or token in self.expired_tokens:
            return _json({"message": "Unknown interaction", "code": 10062}, status=404)
        kind = body["type"]
        data = body.get("data") or {}
        record["responses"].append({"type": kind, "data": data, "files": files, "at": time.monotonic()})
        response: dict[str, Any] = {"interaction": {"id": record["id"], "type": 2}}
        if kind in (4, 5):  # a message (type 4) or "thinking…" (type 5) becomes the original response
            ephemeral = bool(int(data.get("flags", 0)) & 64)
            message = self._new_message(record["channel_id"], data, files, author=BOT_USER)
            message["flags"] = int(data.get("flags", 0)) | (128 if kind == 5 else 0)
            record["original"] = int(message["id"])
            record["ephemeral"] = ephemeral
            response["interaction"].update(
                response_message_id=message["id"],
                response_message_loading=kind == 5,
                response_message_ephemeral=ephemeral,
            )
            response["resource"] = {"type": kind, "message": message}
        return _json(response)

    def _webhook(self, method: str, parts: list[str], body: Any, files: list[tuple[str, bytes]]) -> web.Response:
        token = parts[2]
        record = self.interactions.get(token)
        if record is None or token in self.expired_tokens:
            return _json(_BAD_TOKEN, status=401)
        if len(parts) == 3 and method == "POST":  # follow-up message
            message = self._new_message(record["channel_id"], body or {}, files, author=BOT_USER)
            message["flags"] = int((body or {}).get("flags", 0))
            record["followups"].append(int(message["id"]))
            return _json(message)
        target = parts[4] if len(parts) > 4 else ""
        message_id = record["original"] if target == "@original" else int(target)
        if message_id is None or message_id not in self.messages:
            return _json({"message": "Unknown Message", "code": 10008}, status=404)
        if method == "GET":
            return _json(self.messages[message_id])
        if method == "DELETE":
            self.messages.pop(message_id, None)
            return web.Response(status=204)
        record["edits"].append({"message_id": message_id, "body": body, "files": files, "at": time.monotonic()})
        return _json(self._edit_message(message_id, body or {}, files))

    def _channel_route(self, method: str, parts: list[str], body: Any, files: list[tuple[str, bytes]]) -> web.Response:
        channel_id = int(parts[1])
        if channel_id not in self.channels:
            return _json(_UNKNOWN_CHANNEL, status=404)
        if len(parts) == 2 and method == "GET":
            return _json(self.channels[channel_id])
        if parts[2:3] == ["messages"] and parts[4:] == ["threads"] and method == "POST":
            return _json(self._new_thread(channel_id, int(parts[3]), body))
        if parts[2:3] == ["messages"]:
            if channel_id in self.forbidden_channels and method in ("POST", "PATCH"):
                return _json(_PERMISSION_ERROR, status=403)
            if len(parts) == 3 and method == "POST":
                if self.failing_posts:
                    return _json({"message": "Service Unavailable", "code": 0}, status=self.failing_posts.pop(0))
                return _json(self._new_message(channel_id, body or {}, files, author=BOT_USER))
            message_id = int(parts[3])
            if message_id not in self.messages:
                return _json({"message": "Unknown Message", "code": 10008}, status=404)
            if len(parts) == 4 and method == "PATCH":
                return _json(self._edit_message(message_id, body or {}, files))
            if len(parts) == 4 and method == "GET":
                return _json(self.messages[message_id])
            if len(parts) == 4 and method == "DELETE":
                self.messages.pop(message_id)
                return web.Response(status=204)
        return _json({"message": "fake Discord: unsupported channel route", "code": 0}, status=404)

    def _new_thread(self, parent_id: int, message_id: int, body: dict[str, Any]) -> dict[str, Any]:
        """A public thread started from a message; its id is the message's, as on Discord."""
        thread = {
            **self._channel(message_id, body["name"], nsfw=False),
            "type": 11,
            "parent_id": str(parent_id),
            "owner_id": BOT_USER["id"],
            "message_count": 0,
            "member_count": 1,
            "flags": 0,
            "thread_metadata": {
                "archived": False,
                "auto_archive_duration": body.get("auto_archive_duration", 1440),
                "archive_timestamp": _now_iso(),
                "locked": False,
            },
        }
        del thread["permission_overwrites"]
        self.channels[message_id] = thread
        self.threads.append(thread)
        return thread

    # --- messages ----------------------------------------------------------------------------------

    def _new_message(
        self, channel_id: int, body: dict[str, Any], files: list[tuple[str, bytes]], *, author: dict[str, Any]
    ) -> dict[str, Any]:
        message_id = snowflake()
        message: dict[str, Any] = {
            "id": str(message_id),
            "channel_id": str(channel_id),
            "author": author,
            "content": body.get("content") or "",
            "timestamp": _now_iso(),
            "edited_timestamp": None,
            "tts": False,
            "mention_everyone": False,
            "mentions": [],
            "mention_roles": [],
            "attachments": self._attachments(files),
            "embeds": [],
            "pinned": False,
            "type": 19 if body.get("message_reference") else 0,
            "flags": int(body.get("flags", 0) or 0),
            "components": body.get("components") or [],
        }
        self.files[message_id] = [data for _, data in files]
        if "guild_id" in self.channels.get(channel_id, {}):
            message["guild_id"] = str(GUILD_ID)
        if body.get("message_reference"):
            message["message_reference"] = body["message_reference"]
        self.messages[message_id] = message
        return message

    def _edit_message(self, message_id: int, body: dict[str, Any], files: list[tuple[str, bytes]]) -> dict[str, Any]:
        message = self.messages[message_id]
        if "content" in body:
            message["content"] = body["content"] or ""
        if "components" in body:
            message["components"] = body["components"] or []
        if "attachments" in body or files:
            keep = {str(a.get("id")) for a in body.get("attachments") or []}
            kept = [a for a in message["attachments"] if a["id"] in keep]
            message["attachments"] = kept + self._attachments(files)
            self.files[message_id] = [data for _, data in files] or self.files.get(message_id, [])
        message["flags"] = int(message.get("flags", 0)) & ~128  # no longer "thinking…"
        message["edited_timestamp"] = _now_iso()
        return message

    def _attachments(self, files: list[tuple[str, bytes]]) -> list[dict[str, Any]]:
        out = []
        for filename, data in files:
            attachment_id = str(snowflake())
            self.cdn[f"{attachment_id}-{filename}"] = (data, "image/png")
            out.append(
                {
                    "id": attachment_id,
                    "filename": filename,
                    "size": len(data),
                    "url": f"{self.base_url}/cdn/{attachment_id}-{filename}",
                    "proxy_url": f"{self.base_url}/cdn/{attachment_id}-{filename}",
                    "content_type": "image/png",
                }
            )
        return out


def _user(user_id: int, name: str | None = None) -> dict[str, Any]:
    return {
        "id": str(user_id),
        "username": name or f"user{user_id}",
        "discriminator": "0",
        "global_name": None,
        "avatar": None,
    }
