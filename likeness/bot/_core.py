"""The platform-neutral bot: every frontend (Telegram, Discord, the playground) turns chat events into
calls here and turns the answers into platform messages. Nothing here knows a chat library.

Order of checks for anything that would cost GPU time: operator allowlist → ban → prompt policy →
queue validation and limits (in `QueueClient`). A refusal never reaches the GPU.

A "community" is a Discord server (`origin.extra["guild_id"]`) or a chat: its settings (collaboration,
NSFW opt-in, extra blocked words) and the operator allowlist apply per community.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from likeness.bot._access import AccessPolicy
from likeness.bot._buttons import Button, result_buttons
from likeness.bot._grammar import PortraitArgs
from likeness.bot._links import MessageLinks
from likeness.bot._policy import PromptPolicy, screen_request
from likeness.bot._safety import Decision, Place, decide, notice
from likeness.bot._texts import (
    NEED_SELFIE,
    caption,
    error_text,
    presets_text,
    progress_text,
    queued_text,
    stats_text,
)
from likeness.config import Settings
from likeness.errors import LikenessError, PromptTooLong, QueueUnavailable, UserError
from likeness.presets import get_format
from likeness.queue import Delivery, Origin, PortraitParams, QueueClient, ResultRecord, Ticket
from likeness.queue._abuse import AbuseLog
from likeness.queue._community import ChatSettings, CommunitySettings
from likeness.queue._errors import outlasting_outage

__all__ = ["BotCore", "ResultMessage"]

log = logging.getLogger("likeness.bot")


@dataclass(frozen=True, slots=True)
class ResultMessage:
    """What a frontend sends for a finished job: images with one caption and buttons, or a text."""

    text: str
    images: tuple[bytes, ...] = ()
    buttons: tuple[Button, ...] = ()
    result_id: str | None = None
    spoiler: bool = False
    notices: tuple[str, ...] = field(default=())


class BotCore:
    """Shared behaviour of all frontends. Build once per process with an open `QueueClient`."""

    def __init__(self, settings: Settings, queue: QueueClient) -> None:
        self.settings = settings
        self.queue = queue
        self.presets = queue.presets
        self.access = AccessPolicy.from_settings(settings)
        self.policy = PromptPolicy.from_settings(settings)
        self.links = MessageLinks(queue.redis, settings.result_ttl_s)
        self.abuse = AbuseLog(queue.redis, settings.abuse_retention_days)
        self.community = CommunitySettings(queue.redis, settings)

    # --- requests ----------------------------------------------------------------------------------

    async def portrait(
        self, origin: Origin, args: PortraitArgs, selfie: bytes | None, *, key: str | None = None
    ) -> Ticket:
        """Check and enqueue a portrait; `UserError`s explain what to fix.

        `key` (e.g. the request message id) makes a repeated event (a platform re-sending an update after a
        restart) return the first job's ticket, marked `duplicate`, instead of a second job.
        """
        self._admit(origin)
        if selfie is None:
            raise UserError(message=NEED_SELFIE)
        await self._screen(origin, args.prompt)
        params = PortraitParams(preset=args.preset, prompt=args.prompt, format=args.format, count=args.count)
        ticket = await self.queue.submit_portrait(origin, selfie, params, idempotency_key=key)
        if ticket.duplicate:
            return ticket
        detail = f"portrait {args.preset} {args.prompt}".strip()
        try:  # the job is queued: telling the user "unavailable" now would be wrong (the portrait comes)
            await outlasting_outage(
                lambda: self.abuse.record(
                    "request", origin.user_id, origin.platform, origin.chat_id, ticket.job_id, detail
                )
            )
        except QueueUnavailable:
            log.warning("job %s: queued, but its audit entry was lost (Redis unavailable)", ticket.job_id)
        return ticket

    async def check_portrait(self, origin: Origin, args: PortraitArgs) -> None:
        """The checks of `portrait` that need no selfie (allowlist, ban, policy, preset, format, prompt length),
        so a frontend can refuse at once, before it answers publicly or downloads anything."""
        self._admit(origin)
        self.presets.resolve(args.preset)
        if args.format is not None:
            get_format(args.format)
        if len(args.prompt) > self.settings.max_prompt_chars:
            raise PromptTooLong(length=len(args.prompt), limit=self.settings.max_prompt_chars)
        await self._screen(origin, args.prompt)

    async def reroll(self, origin: Origin, result_id: str, *, key: str | None = None) -> Ticket:
        """A new image of the same request (an edit is re-run with a new seed)."""
        self._admit(origin)
        await self._screen(origin, "")
        await self._check_owner(origin, result_id)
        return await self.queue.submit_reroll(origin, result_id, idempotency_key=key)

    async def variations(self, origin: Origin, result_id: str, *, key: str | None = None) -> Ticket:
        """Several new takes on a result's request."""
        self._admit(origin)
        await self._screen(origin, "")
        await self._check_owner(origin, result_id)
        return await self.queue.submit_variations(origin, result_id, idempotency_key=key)

    async def edit(
        self,
        origin: Origin,
        result_id: str,
        instruction: str,
        mask: bytes | None = None,
        *,
        key: str | None = None,
    ) -> Ticket:
        """An edit of a result ("make the hair blue")."""
        self._admit(origin)
        await self._screen(origin, instruction)
        await self._check_owner(origin, result_id)
        return await self.queue.submit_edit(origin, result_id, instruction, mask, idempotency_key=key)

    async def check_may_change(self, origin: Origin, result_id: str) -> None:
        """Raise (`NotAllowed`, `Banned`, `NotRequester`, `ResultExpired`, ...) unless `origin`'s user may reroll
        or edit `result_id`: lets a frontend refuse a button press quietly before it shows any progress."""
        self._admit(origin)
        await self._screen(origin, "")
        await self._check_owner(origin, result_id)

    async def cancel(self, origin: Origin) -> str:
        cancelled = await self.queue.cancel(origin.user_id)
        return f"🛑 Cancelled {len(cancelled)} portrait(s)." if cancelled else "Nothing of yours is running."

    async def forget(self, origin: Origin) -> str:
        counts = await self.queue.forget(origin.user_id)
        total = sum(counts.values())
        return f"🧹 Done: I deleted everything I had stored about you ({total} item(s))."

    async def stats(self, origin: Origin) -> str:
        """Admin-only numbers; others get the private-bot refusal."""
        if not self.access.is_admin(origin.user_id):
            raise UserError(message="/stats is for this bot's admins.")
        stats = await self.queue.stats()
        safety = await self.abuse.counts(datetime.now(UTC) - timedelta(days=1))
        return stats_text(
            {
                "queued": stats.queued,
                "running": stats.running,
                "jobs today": stats.jobs_today,
                "failures today": sum(stats.failures_today.values()),
                "average job (s)": round(stats.avg_job_s, 1),
                **{f"{kind} (24 h)": count for kind, count in safety.items()},
            }
        )

    def presets_text(self) -> str:
        return presets_text(self.presets)

    # --- chat messages ↔ results -------------------------------------------------------------------

    async def result_for_message(self, platform: str, chat_id: str, message_id: str) -> str | None:
        return await self.links.result_for(platform, chat_id, message_id)

    async def link_message(self, platform: str, chat_id: str, message_id: str, result_id: str) -> None:
        await self.links.link(platform, chat_id, message_id, result_id)

    async def chat_settings(self, platform: str, community_id: str) -> ChatSettings:
        """A chat's (or Discord server's) own settings: collaboration, NSFW opt-in, extra blocked words."""
        return await self.community.get(platform, community_id)

    # --- progress and delivery ---------------------------------------------------------------------

    def ticket_text(self, ticket: Ticket) -> str:
        return queued_text(ticket.position, ticket.eta_s)

    async def follow(self, job_id: str, *, idle_timeout_s: float | None = None) -> AsyncIterator[str]:
        """Progress texts for a job until it ends (the delivery then brings the result)."""
        async for event in self.queue.progress(job_id, idle_timeout_s=idle_timeout_s):
            if event.stage == "queued" and event.position:
                yield queued_text(event.position, event.eta_s)
            elif event.stage == "started":
                yield progress_text(0, 1)
            elif event.stage == "step":
                yield progress_text(event.step, event.total)
            elif event.stage == "cancelled":  # no delivery follows a cancelled job: say so where progress was
                yield "🛑 Cancelled."
                return
            elif event.final:
                return

    async def render(self, delivery: Delivery) -> ResultMessage:
        """What to send for a finished job: images + caption + buttons, a withheld-image notice, or an error."""
        if delivery.result is None:
            return ResultMessage(text=error_text(delivery.user_message, delivery.job_id))
        result = delivery.result
        meta = result.metadata
        scores = meta.get("likeness_scores") or [None] * len(result.seeds)
        text = "\n".join(
            caption(meta, seed, score)  # type: ignore[arg-type]
            for seed, score in zip(result.seeds, scores, strict=False)
        )
        decision, warning = await self.screening(result, delivery.origin)
        if decision is Decision.WITHHOLD:
            return ResultMessage(text=warning or "", result_id=result.result_id)
        images = await self.images(result, delivery.origin)
        notices = tuple(str(n) for n in meta.get("notices", []))  # type: ignore[union-attr]
        if warning:
            notices += (warning,)
        if notices:
            text = "\n".join((text, *notices))
        return ResultMessage(
            text=text,
            images=images,
            buttons=tuple(result_buttons(result.result_id)),
            result_id=result.result_id,
            spoiler=decision is Decision.SPOILER,
            notices=notices,
        )

    async def screening(self, result: ResultRecord, origin: Origin) -> tuple[Decision, str | None]:
        """The output guard's verdict for showing `result` at `origin`, with the text for the user."""
        scores = result.metadata.get("nsfw_scores") or []
        place = await self._place(origin)
        decision = decide(max(scores, default=0.0), place, self.settings)  # type: ignore[type-var]
        return decision, notice(decision, place, self.settings)

    async def images(self, result: ResultRecord, origin: Origin) -> tuple[bytes, ...]:
        """The result's image files as they may be shown at `origin`: none when the guard withholds them.

        Every path that hands out images (delivery, full size, downloads) goes through here.
        """
        decision, _ = await self.screening(result, origin)
        if decision is Decision.WITHHOLD:
            return ()
        return tuple([await self.queue.get_image(blob) for blob in result.image_blob_ids])

    def error_message(self, exc: BaseException) -> str:
        """The one error sink: user errors say what to fix; anything else is logged with a reference."""
        if isinstance(exc, UserError):
            return error_text(exc.user_message)
        reference = uuid.uuid4().hex[:8]
        if isinstance(exc, LikenessError):
            log.warning("service error ref=%s: %s", reference, exc, exc_info=exc)
            return error_text(exc.user_message)
        log.error("unexpected error ref=%s", reference, exc_info=exc)
        return error_text(None, reference)

    # --- checks ------------------------------------------------------------------------------------

    def _admit(self, origin: Origin) -> None:
        self.access.check(origin.user_id, origin.chat_id, origin.extra.get("guild_id"))

    async def _screen(self, origin: Origin, prompt: str) -> None:
        """Ban list and prompt policy (with the community's extra words); refusals are audited."""
        chat = await self.community.get(origin.platform, _community(origin))
        await screen_request(
            policy=self.policy,
            abuse=self.abuse,
            user_id=origin.user_id,
            platform=origin.platform,
            chat_id=origin.chat_id,
            prompt=prompt,
            extra_words=chat.extra_blocked_words,
        )

    async def _check_owner(self, origin: Origin, result_id: str) -> None:
        result = await self.queue.get_result(result_id)
        chat = await self.community.get(origin.platform, _community(origin))
        self.access.check_owner(origin.user_id, result.owner_user_id, collaborate=chat.collaborate)

    async def _place(self, origin: Origin) -> Place:
        chat = await self.community.get(origin.platform, _community(origin))
        return Place(age_restricted=origin.age_restricted or chat.age_restricted, allow_nsfw=chat.allow_nsfw)


def _community(origin: Origin) -> str:
    return origin.extra.get("guild_id") or origin.chat_id
