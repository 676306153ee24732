"""The platform-neutral bot: every frontend (Telegram, Discord, the playground) turns chat events into
calls here and turns the answers into platform messages. Nothing here knows a chat library.

Order of checks for anything that would cost GPU time: operator allowlist → ban → prompt policy →
queue validation and limits (in `QueueClient`). A refusal never reaches the GPU.

The core is the ONE gate that hands out image bytes (delivered results, 📥 full size, the playground): every
path checks allowlist → ban → owner (or collaboration in the result's own community) → the NSFW decision
for the place the image goes to. Adapters never read images from the queue themselves; ids in callback data
and custom ids are hostile input, so nothing is shown because an id was known.

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
from likeness.bot._community import ChatSettings, CommunitySettings
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
from likeness.errors import Banned, LikenessError, QueueUnavailable, ResultExpired, UserError
from likeness.presets import PresetCatalog
from likeness.queue import AbuseLog, Delivery, Origin, QueueClient, ResultRecord, Ticket, outlasting_outage
from likeness.requests import (
    PortraitArgs,
    PortraitSpec,
    check_instruction,
    check_portrait_args,
    edit_spec,
    portrait_spec,
)

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
    owners: tuple[str, ...] = field(default=())  # the result's users (requester, face): links are theirs


class BotCore:
    """Shared behaviour of all frontends. Build once per process with an open `QueueClient`."""

    def __init__(self, settings: Settings, queue: QueueClient, *, presets: PresetCatalog | None = None) -> None:
        self.settings = settings
        self.queue = queue
        self.presets = presets or PresetCatalog.load(settings.presets_dir)
        self.access = AccessPolicy.from_settings(settings)
        self.policy = PromptPolicy.from_settings(settings)
        self.links = MessageLinks(queue.redis, settings.result_ttl_s)
        self.abuse = AbuseLog(queue.redis, settings.abuse_retention_days)
        self.community = CommunitySettings(queue.redis, settings)

    # --- requests ----------------------------------------------------------------------------------

    async def portrait(
        self, origin: Origin, spec: PortraitSpec, selfie: bytes | None, *, key: str | None = None
    ) -> Ticket:
        """Enqueue a portrait `spec` (from `check_portrait`) of the person in `selfie`; `UserError`s explain.

        `key` (e.g. the request message id) makes a repeated event (a platform re-sending an update after a
        restart) return the first job's ticket, marked `duplicate`, instead of a second job.
        """
        self._admit(origin)
        if selfie is None:
            raise UserError(message=NEED_SELFIE)
        ticket = await self.queue.submit_portrait(origin, selfie, spec, idempotency_key=key)
        if ticket.duplicate:
            return ticket
        detail = f"portrait {spec.preset} {spec.prompt}".strip()
        try:  # the job is queued: telling the user "unavailable" now would be wrong (the portrait comes)
            await outlasting_outage(
                lambda: self.abuse.record(
                    "request", origin.user_id, origin.platform, origin.chat_id, ticket.job_id, detail
                )
            )
        except QueueUnavailable:
            log.warning("job %s: queued, but its audit entry was lost (Redis unavailable)", ticket.job_id)
        return ticket

    async def check_portrait(self, origin: Origin, args: PortraitArgs) -> PortraitSpec:
        """Every check of a portrait request, before any upload is read: allowlist, sizes, then ban and prompt
        policy (the preset spec screened with the prompt, so a fusion can't hide a term, and before a preset
        name is ever echoed), then presets and format. The spec is what `portrait` enqueues."""
        self._admit(origin)
        args = check_portrait_args(args, max_prompt_chars=self.settings.max_prompt_chars)
        await self._screen(origin, args.prompt, context=args.preset)
        return portrait_spec(args, self.presets)

    async def reroll(self, origin: Origin, result_id: str, *, key: str | None = None) -> Ticket:
        """A new image of the same request (an edit is re-run with a new seed)."""
        await self.check_may_change(origin, result_id)
        return await self.queue.submit_reroll(origin, result_id, idempotency_key=key)

    async def variations(self, origin: Origin, result_id: str, *, key: str | None = None) -> Ticket:
        """Several new takes on a result's request."""
        await self.check_may_change(origin, result_id)
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
        """An edit of a result ("make the hair blue"): screened together with the request that made the result
        (before any answer quotes it), parsed once, and enqueued as parsed."""
        text = check_instruction(instruction, max_chars=self.settings.max_prompt_chars)
        await self.check_may_change(origin, result_id, text)
        spec = edit_spec(text, has_mask=mask is not None, max_chars=self.settings.max_prompt_chars)
        return await self.queue.submit_edit(origin, result_id, spec, mask, idempotency_key=key)

    async def check_may_change(self, origin: Origin, result_id: str, instruction: str = "") -> None:
        """Raise (`NotAllowed`, `Banned`, `NotRequester`, `ResultExpired`, `PromptRefused`, ...) unless `origin`'s
        user may reroll or edit `result_id` (with `instruction`): lets a frontend refuse a button press quietly
        before it shows any progress. The result's own request is screened again with the instruction, so a
        policy that changed since, or an edit that turns a harmless request into a forbidden one, is refused."""
        self._admit(origin)
        record = await self.queue.get_result(result_id)
        await self._screen(origin, instruction, context=_request_text(record))
        await self._check_owner(origin, record)

    async def full_size(self, origin: Origin, result_id: str) -> ResultMessage:
        """📥: the result's original files for `origin`'s user, through every check of the gate; a text (no
        images) when the NSFW guard withholds them where they would go."""
        record = await self._authorised(origin, result_id)
        decision, warning = await self.screening(record, origin)
        if decision is Decision.WITHHOLD:
            return ResultMessage(text=warning or "", result_id=record.result_id)
        return ResultMessage(
            text="📥 Full size",
            images=await self._images(record),
            result_id=record.result_id,
            spoiler=decision is Decision.SPOILER,
            owners=record.request.owners,
        )

    async def result(self, origin: Origin, result_id: str) -> ResultRecord:
        """A result's record (no images) for `origin`'s user, after the gate's access checks."""
        return await self._authorised(origin, result_id)

    async def image(self, origin: Origin, result_id: str, index: int) -> bytes:
        """One image of a result for `origin`'s user, through every check of the gate; `ResultExpired` when the
        index is out of range or the NSFW guard withholds the image at `origin`."""
        record = await self._authorised(origin, result_id)
        decision, _ = await self.screening(record, origin)
        if decision is Decision.WITHHOLD or not 0 <= index < len(record.image_blob_ids):
            raise ResultExpired()
        return await self.queue.get_image(record.image_blob_ids[index])

    async def cancel(self, origin: Origin) -> str:
        cancelled = await self.queue.cancel(origin.user_id)
        return f"🛑 Cancelled {len(cancelled)} portrait(s)." if cancelled else "Nothing of yours is running."

    async def forget(self, origin: Origin) -> str:
        """/forget: delete everything stored about the user (see `QueueClient.forget`), their audit entries
        included; a ban and safety records are kept, and the answer says so."""
        counts = await self.queue.forget(origin.user_id)
        _, kept = await self.abuse.forget(origin.user_id, origin.platform)
        total = sum(counts.values())
        text = f"🧹 Done: I deleted everything I had stored about you ({total} item(s))."
        if await self.abuse.is_banned(origin.user_id, origin.platform):
            text += " I kept the record of your ban: this bot's moderators need it."
        elif kept:
            text += " I kept the safety record of refused requests: this bot's moderators need it."
        return text

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

    async def link_message(self, platform: str, chat_id: str, message_id: str, rendered: ResultMessage) -> None:
        """Remember that a sent message shows `rendered`'s result (replies, reactions and buttons find it)."""
        assert rendered.result_id is not None
        await self.links.link(platform, chat_id, message_id, rendered.result_id, rendered.owners)

    async def result_topic(self, chat_id: str, result_id: str) -> str | None:
        """The forum topic (thread) a result was asked for in, when asked from `chat_id`; else None."""
        record = await self.queue.get_result(result_id)
        return record.origin.thread_id if record.origin.chat_id == chat_id else None

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
        scores = meta.likeness_scores or (None,) * len(result.seeds)
        text = "\n".join(caption(meta, seed, score) for seed, score in zip(result.seeds, scores, strict=False))
        decision, warning = await self.screening(result, delivery.origin)
        if decision is Decision.WITHHOLD:
            return ResultMessage(text=warning or "", result_id=result.result_id, owners=result.request.owners)
        images = await self._images(result)
        notices = meta.notices
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
            owners=result.request.owners,
        )

    async def screening(self, result: ResultRecord, origin: Origin) -> tuple[Decision, str | None]:
        """The output guard's verdict for showing `result` at `origin`, with the text for the user."""
        place = await self._place(origin)
        decision = decide(max(result.metadata.nsfw_scores, default=0.0), place, self.settings)
        return decision, notice(decision, place, self.settings)

    async def _images(self, result: ResultRecord) -> tuple[bytes, ...]:
        """The result's image files. Only behind the gate: a delivery to its own requester (`render`), or
        `full_size` / `image` after `_authorised`, each after the NSFW decision for its place."""
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

    async def _screen(self, origin: Origin, prompt: str, *, context: str = "") -> None:
        """Ban list and prompt policy (with the community's extra words); refusals are audited. `context` (a
        preset spec, the request being edited) is screened together with `prompt` but not counted in its length."""
        chat = await self.community.get(origin.platform, _community(origin))
        await screen_request(
            policy=self.policy,
            abuse=self.abuse,
            user_id=origin.user_id,
            platform=origin.platform,
            chat_id=origin.chat_id,
            prompt=prompt,
            context=context,
            extra_words=chat.extra_blocked_words,
        )

    async def _authorised(self, origin: Origin, result_id: str) -> ResultRecord:
        """The gate's access checks for a result: allowlist → ban → owner or collaboration; its record."""
        self._admit(origin)
        if await self.abuse.is_banned(origin.user_id, origin.platform):
            raise Banned()
        record = await self.queue.get_result(result_id)
        await self._check_owner(origin, record)
        return record

    async def _check_owner(self, origin: Origin, record: ResultRecord) -> None:
        """The requester (or an admin) only, unless the result's own community lets its members collaborate:
        a collaborative group opens its own results to its members, never other chats' results."""
        same_community = record.origin.platform == origin.platform and _community(record.origin) == _community(origin)
        collaborate = same_community and (await self.community.get(origin.platform, _community(origin))).collaborate
        self.access.check_owner(origin.user_id, record.owner_user_id, collaborate=collaborate)

    async def _place(self, origin: Origin) -> Place:
        chat = await self.community.get(origin.platform, _community(origin))
        return Place(age_restricted=origin.age_restricted or chat.age_restricted, allow_nsfw=chat.allow_nsfw)


def _community(origin: Origin) -> str:
    return origin.extra.get("guild_id") or origin.chat_id


def _request_text(record: ResultRecord) -> str:
    """What a result was asked with (preset spec, prompt, edit instruction): screened again with a change."""
    request = record.request
    parts = [request.portrait.preset, request.portrait.prompt] if request.portrait else []
    if request.edit is not None:
        parts.append(request.edit.instruction.text)
    return " ".join(part for part in parts if part)
