"""The local web playground: a third thin frontend over `BotCore`, served by aiohttp.

A browser session (cookie) is one user. Uploads go through the same checks as chat requests; progress
streams over Server-Sent Events; results come from the queue's delivery stream like any bot's, and images
only through the core's gate.

Only this machine's own pages may use it: a request whose `Host` is not a loopback name, the configured
host or one in `playground_allowed_hosts` is refused (DNS rebinding), and so is a write whose `Origin` (or
`Sec-Fetch-Site`) says another site sent it (a web page cannot queue jobs on a visitor's GPU).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import secrets
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from importlib import resources
from typing import Any, Final
from urllib.parse import urlsplit

from aiohttp import web
from aiohttp.typedefs import Middleware
from redis.exceptions import RedisError

from likeness.bot._core import BotCore
from likeness.bot._safety import Decision
from likeness.bot._texts import caption
from likeness.config import Settings
from likeness.errors import (
    LikenessError,
    NotAllowed,
    NotRequester,
    QueueFull,
    QueueUnavailable,
    RateLimited,
    ResultExpired,
    StorageFull,
    TooManyActiveJobs,
    UserError,
)
from likeness.images import format_size
from likeness.queue import Delivery, DeliveryConsumer, Origin, ResultRecord, Ticket, keys
from likeness.requests import FORMATS, MAX_COUNT, PortraitArgs, parse_seed

__all__ = ["PLATFORM", "build_app", "consume_deliveries"]

log = logging.getLogger("likeness.playground")

PLATFORM: Final = "playground"
COOKIE = "likeness_session"
CORE: web.AppKey[BotCore] = web.AppKey("core", BotCore)
_OUTCOME_WAIT_S = 30.0
_STATUS = {
    RateLimited: 429,
    QueueFull: 429,
    TooManyActiveJobs: 429,
    StorageFull: 429,
    ResultExpired: 410,
    NotAllowed: 403,
    QueueUnavailable: 503,
}
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def build_app(core: BotCore) -> web.Application:
    """The playground application; run `consume_deliveries` beside it so results arrive."""
    app = web.Application(
        client_max_size=core.settings.max_upload_bytes + 64 * 1024,
        middlewares=[_same_site(core.settings), _session, _errors],
    )
    app[CORE] = core
    app.add_routes(
        [
            web.get("/", _index),
            web.get("/static/{name}", _static),
            web.get("/api/presets", _presets),
            web.post("/api/portrait", _portrait),
            web.post("/api/results/{result_id}/reroll", _reroll),
            web.post("/api/results/{result_id}/variations", _variations),
            web.post("/api/results/{result_id}/edit", _edit),
            web.get("/api/results/{result_id}", _result),
            web.get("/api/results/{result_id}/images/{index}", _image),
            web.get("/api/jobs/{job_id}/events", _events),
            web.get("/api/history", _history),
            web.post("/api/cancel", _cancel),
            web.post("/api/forget", _forget),
        ]
    )
    return app


async def consume_deliveries(core: BotCore, consumer_name: str | None = None) -> None:
    """Record each finished playground job (result id or error) for the SSE streams, then ack it."""
    name = consumer_name or f"playground-{socket.gethostname()}"
    ttl = core.settings.result_ttl_s
    async with DeliveryConsumer(core.queue.redis, PLATFORM, name) as deliveries:
        async for delivery in deliveries:
            outcome = _outcome(delivery)
            user = delivery.origin.user_id
            owned = [keys.playground_outcome(delivery.job_id), keys.playground_history(delivery.origin.chat_id)]
            async with core.queue.redis.pipeline(transaction=True) as pipe:
                pipe.set(owned[0], json.dumps(outcome), ex=ttl)
                if delivery.result is not None:
                    pipe.lpush(owned[1], delivery.result.result_id)
                    pipe.ltrim(owned[1], 0, 199)
                    pipe.expire(owned[1], ttl)
                pipe.sadd(keys.user_keys(user), *owned)  # `forget` deletes them with the rest
                pipe.expire(keys.user_keys(user), ttl)
                await pipe.execute()
            await deliveries.ack(delivery)


def _outcome(delivery: Delivery) -> dict[str, Any]:
    if delivery.result is not None:
        return {"result_id": delivery.result.result_id}
    return {"error": delivery.error_code or "error", "message": delivery.user_message}


# --- middlewares ---------------------------------------------------------------------------------


def _same_site(settings: Settings) -> Middleware:
    """Refuse foreign `Host`s (DNS rebinding) and cross-site writes (`Origin`, `Sec-Fetch-Site`)."""
    allowed = {"localhost", "127.0.0.1", "::1", *(h.lower() for h in settings.playground_allowed_hosts)}
    if settings.playground_host not in ("0.0.0.0", "::", ""):
        allowed.add(settings.playground_host.lower())

    @web.middleware
    async def same_site(request: web.Request, handler: Handler) -> web.StreamResponse:
        host = _hostname(request.host)
        if host is None or not (host in allowed or _is_loopback(host)):
            return _error(403, "forbidden_host", "This playground only answers on this machine's own address.")
        if request.method not in _SAFE_METHODS:
            origin = request.headers.get("Origin")
            site = request.headers.get("Sec-Fetch-Site")
            if (origin is not None and _hostport(origin) != request.host.lower()) or site in (
                "cross-site",
                "same-site",
            ):
                return _error(403, "cross_origin", "Requests from other web pages are not accepted.")
        return await handler(request)

    return same_site


@web.middleware
async def _session(request: web.Request, handler: Handler) -> web.StreamResponse:
    """One random, HttpOnly cookie per browser: the playground's notion of a user."""
    session = request.cookies.get(COOKIE, "")
    fresh = not (16 <= len(session) <= 64 and session.replace("-", "").replace("_", "").isalnum())
    if fresh:
        session = secrets.token_urlsafe(18)
    request["session"] = session
    response = await handler(request)
    if fresh and not response.prepared:
        response.set_cookie(COOKIE, session, httponly=True, samesite="Strict", max_age=7 * 24 * 3600)
    return response


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The playground's error sink: JSON with the same texts the bots show."""
    try:
        return await handler(request)
    except web.HTTPRequestEntityTooLarge:
        limit = request.app[CORE].settings.max_upload_bytes
        return _error(413, "too_large", f"That file is too large; the limit is {format_size(limit)}.")
    except web.HTTPException:
        raise
    except UserError as exc:
        return _error(_STATUS.get(type(exc), 400), exc.code, exc.user_message)
    except RedisError as exc:
        return _error(503, QueueUnavailable.code, QueueUnavailable().user_message, cause=exc)
    except Exception as exc:  # the one sink: anything else is logged with a reference
        status = _STATUS.get(type(exc), 500) if isinstance(exc, LikenessError) else 500
        return _error(status, getattr(exc, "code", "error"), request.app[CORE].error_message(exc), cause=exc)


def _error(status: int, code: str, message: str, cause: BaseException | None = None) -> web.Response:
    if cause is not None and status >= 500:
        log.warning("playground error %s: %s", code, cause)
    return web.json_response({"error": code, "message": message}, status=status)


# --- pages ---------------------------------------------------------------------------------------

_STATIC_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css"}


async def _index(request: web.Request) -> web.Response:
    return _static_file("index.html")


async def _static(request: web.Request) -> web.Response:
    return _static_file(request.match_info["name"])


def _static_file(name: str) -> web.Response:
    folder = resources.files("likeness.bot.playground") / "static"
    entry = folder / name
    suffix = name[name.rfind(".") :] if "." in name else ""
    if "/" in name or suffix not in _STATIC_TYPES or not entry.is_file():
        raise web.HTTPNotFound()
    return web.Response(body=entry.read_bytes(), content_type=_STATIC_TYPES[suffix], charset="utf-8")


# --- API -----------------------------------------------------------------------------------------


async def _presets(request: web.Request) -> web.Response:
    core = request.app[CORE]
    return web.json_response(
        {
            "presets": [
                {
                    "name": p.name,
                    "title": p.title,
                    "emoji": p.emoji,
                    "description": p.description,
                    "category": p.category,
                    "format": p.defaults.format,
                }
                for p in core.presets
            ],
            "formats": [{"name": f.name, "description": f.description} for f in FORMATS.values()],
            "max_count": MAX_COUNT,
        }
    )


async def _portrait(request: web.Request) -> web.Response:
    core = request.app[CORE]
    form = await _form(request)
    selfie = form.get("selfie")
    count_text = str(form.get("count") or "1")
    if not count_text.isdigit() or len(count_text) > 3:
        raise UserError(message=f"I can make 1 to {MAX_COUNT} images at a time.")
    seed_text = str(form.get("seed") or "").strip()
    args = PortraitArgs(
        preset=str(form.get("preset") or ""),
        prompt=str(form.get("prompt") or ""),
        format=str(form.get("format") or "").strip() or None,
        count=int(count_text),
        seed=parse_seed(seed_text) if seed_text else None,
    )
    origin = _origin(request)
    spec = await core.check_portrait(origin, args)
    return _ticket(await core.portrait(origin, spec, selfie if isinstance(selfie, bytes) else None))


async def _reroll(request: web.Request) -> web.Response:
    core = request.app[CORE]
    return _ticket(await core.reroll(_origin(request), request.match_info["result_id"]))


async def _variations(request: web.Request) -> web.Response:
    core = request.app[CORE]
    return _ticket(await core.variations(_origin(request), request.match_info["result_id"]))


async def _edit(request: web.Request) -> web.Response:
    core = request.app[CORE]
    form = await _form(request)
    mask = form.get("mask")
    ticket = await core.edit(
        _origin(request),
        request.match_info["result_id"],
        str(form.get("instruction") or ""),
        mask if isinstance(mask, bytes) and mask else None,
    )
    return _ticket(ticket)


async def _result(request: web.Request) -> web.Response:
    core = request.app[CORE]
    with _not_found(NotRequester):  # another session's result: as if it did not exist
        record = await core.result(_origin(request), request.match_info["result_id"])
    return web.json_response(await _result_json(core, record))


async def _image(request: web.Request) -> web.Response:
    index_text = request.match_info["index"]
    if not index_text.isdigit() or len(index_text) > 2:
        raise web.HTTPNotFound()
    with _not_found(NotRequester, ResultExpired):
        data = await request.app[CORE].image(_origin(request), request.match_info["result_id"], int(index_text))
    return web.Response(
        body=data,
        content_type="image/png",
        headers={
            "Content-Disposition": f'inline; filename="likeness-{int(index_text) + 1}.png"',
            "Cache-Control": "private, max-age=3600",
        },
    )


async def _events(request: web.Request) -> web.StreamResponse:
    """Server-Sent Events for one job: `progress` texts, then one `result` or `error`."""
    core = request.app[CORE]
    job_id = request.match_info["job_id"]
    job = await core.queue.get_job(job_id)
    if job is None or job.origin.chat_id != request["session"]:
        raise web.HTTPNotFound()
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await response.prepare(request)
    async for text in _progress_then_outcome(core, job_id):
        await response.write(text.encode())
    return response


async def _progress_then_outcome(core: BotCore, job_id: str) -> AsyncIterator[str]:
    async for event in core.queue.progress(job_id, idle_timeout_s=core.settings.job_timeout_s * 2):
        yield _sse("progress", event.model_dump(mode="json"))
        if event.final:
            break
    loop = asyncio.get_running_loop()
    deadline = loop.time() + _OUTCOME_WAIT_S
    while loop.time() < deadline:
        raw = await core.queue.redis.get(keys.playground_outcome(job_id))
        if raw is not None:
            outcome = json.loads(raw)
            if "result_id" in outcome:
                record = await core.queue.get_result(outcome["result_id"])
                yield _sse("result", await _result_json(core, record))
            else:
                yield _sse("error", outcome)
            return
        await asyncio.sleep(0.05)
    yield _sse("error", {"error": "timeout", "message": "The result did not arrive; please try again."})


async def _history(request: web.Request) -> web.Response:
    core = request.app[CORE]
    ids: list[bytes] = await core.queue.redis.lrange(keys.playground_history(request["session"]), 0, 49)  # type: ignore[misc]
    items = []
    for raw in ids:
        try:
            record = await core.result(_origin(request), raw.decode())
        except ResultExpired:
            continue
        items.append(await _result_json(core, record))
    return web.json_response({"results": items})


async def _cancel(request: web.Request) -> web.Response:
    core = request.app[CORE]
    return web.json_response({"message": await core.cancel(_origin(request))})


async def _forget(request: web.Request) -> web.Response:
    core = request.app[CORE]
    return web.json_response({"message": await core.forget(_origin(request))})


# --- helpers -------------------------------------------------------------------------------------


async def _form(request: web.Request) -> dict[str, str | bytes]:
    """Multipart or urlencoded fields; file fields as bytes (size bounded by client_max_size)."""
    post = await request.post()
    fields: dict[str, str | bytes] = {}
    for key, value in post.items():
        fields[key] = value.file.read() if isinstance(value, web.FileField) else str(value)
    return fields


def _origin(request: web.Request) -> Origin:
    session = request["session"]
    return Origin(platform=PLATFORM, chat_id=session, user_id=f"web:{session}")


def _ticket(ticket: Ticket) -> web.Response:
    return web.json_response({"job_id": ticket.job_id, "position": ticket.position, "eta_s": ticket.eta_s}, status=202)


async def _result_json(core: BotCore, record: ResultRecord) -> dict[str, Any]:
    meta = record.metadata
    scores = list(meta.likeness_scores or (None,) * len(record.seeds))
    decision, warning = await core.screening(record, record.origin)
    shown = 0 if decision is Decision.WITHHOLD else len(record.image_blob_ids)
    notices = list(meta.notices)
    return {
        "result_id": record.result_id,
        "parent_id": record.parent_id,
        "kind": record.kind,
        "seeds": list(record.seeds),
        "scores": scores,
        "captions": [caption(meta, seed, score) for seed, score in zip(record.seeds, scores, strict=False)],
        "images": [f"/api/results/{record.result_id}/images/{i}" for i in range(shown)],
        "preset": meta.preset,
        "instruction": meta.instruction,
        "notices": [*notices, warning] if warning else notices,
        "created_at": record.created_at,
    }


def _sse(event: str, data: object) -> str:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n"


@contextlib.contextmanager
def _not_found(*errors: type[Exception]) -> Iterator[None]:
    """These errors answer 404: nothing tells a stranger whether a result exists."""
    try:
        yield
    except errors:
        raise web.HTTPNotFound() from None


def _hostname(host: str | None) -> str | None:
    """The name in a `Host` header (`[::1]:8080` → `::1`), lower-cased; None when there is none."""
    if not host:
        return None
    return urlsplit(f"//{host}").hostname


def _hostport(origin: str) -> str | None:
    """`http://127.0.0.1:8080` → `127.0.0.1:8080`; None for `null` and other non-URLs."""
    parts = urlsplit(origin)
    return parts.netloc.lower() if parts.scheme in ("http", "https") and parts.netloc else None


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
