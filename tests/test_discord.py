"""The Discord bot end to end: the real discord.py client against a fake Discord on 127.0.0.1, a real Redis
and a worker (the tiny model where pixels matter, the queue's fake engine where timing or failures matter)."""

from __future__ import annotations

import asyncio
import io
import itertools
import time
from collections.abc import Callable
from typing import Any

import pytest
from PIL import Image

from likeness.bot.discord import LikenessClient
from likeness.config import Settings
from likeness.provenance import read_provenance
from likeness.queue import Delivery, QueueClient, append_delivery, keys
from tests.fakes.discord_api import APP_ID, GUILD_ID, NSFW_CHANNEL_ID, TEXT_CHANNEL_ID, FakeDiscord
from tests.helpers.discord import (
    ADMIN,
    OTHER,
    TOKEN,
    USER,
    autocomplete,
    button,
    buttons,
    context_menu,
    ephemeral_texts,
    modal_submit,
    new_image_message,
    png,
    portrait,
    reaction,
    real_worker,
    reply,
    request_portrait,
    running_bot,
    slash,
    user_message,
    wait_result,
    wait_text,
)
from tests.helpers.faces import astronaut, jpeg_with_exif
from tests.helpers.queue import running_worker


@pytest.fixture
def settings(make_settings: Callable[..., Settings], redis_url: str, fake: FakeDiscord) -> Settings:
    return make_settings(redis_url=redis_url, discord_api_url=fake.api_url, discord_token=TOKEN, admins=[str(ADMIN)])


async def test_commands_are_registered_once_and_resynced_on_demand(settings: Settings, fake: FakeDiscord) -> None:
    async with running_bot(settings, fake):
        pass
    assert fake.command_puts == 1
    by_name = {c["name"]: c for c in fake.commands}
    assert set(by_name) == {"portrait", "presets", "cancel", "forget", "stats", "settings", "Reroll", "Edit image"}
    assert int(by_name["settings"]["default_member_permissions"]) == 1 << 5  # Manage Server
    options = {o["name"]: o for o in by_name["portrait"]["options"]}
    assert list(options) == ["preset", "selfie", "prompt", "format", "seed"]
    assert options["preset"]["type"] == 3 and options["preset"]["autocomplete"] and options["preset"]["required"]
    assert options["selfie"]["type"] == 11 and options["selfie"]["required"]
    assert not options["prompt"].get("required") and not options["format"].get("required")
    assert {c["value"] for c in options["format"]["choices"]} >= {"square", "story", "instagram"}
    assert by_name["Reroll"]["type"] == 3 and by_name["Edit image"]["type"] == 3
    # The gateway was found through the API base, and no privileged intent was asked for.
    assert fake.calls("GET", "/gateway/bot")
    assert fake.identifies and fake.identifies[0]["shard"] == [0, 1]
    intents = fake.identifies[0]["intents"]
    assert intents & (1 << 15) == 0  # message content
    assert intents & (1 << 0) and intents & (1 << 9) and intents & (1 << 10) and intents & (1 << 12)

    async with running_bot(settings, fake):
        pass
    assert fake.command_puts == 1, "same definitions: no second upload"

    async with running_bot(settings, fake, force_sync=True):
        pass
    assert fake.command_puts == 2
    await asyncio.sleep(0)


async def test_portrait_happy_path_with_the_tiny_model(settings: Settings, fake: FakeDiscord) -> None:
    async with running_bot(settings, fake) as client, real_worker(settings):
        selfie = fake.add_attachment(jpeg_with_exif(astronaut()), filename="me.jpg", content_type="image/jpeg")
        payload = portrait(fake, selfie, preset="ghibli", prompt="smiling")
        record = fake.interactions[payload["token"]]
        sent_at = time.monotonic()
        await fake.dispatch("INTERACTION_CREATE", payload)
        await fake.wait_for(lambda: record["responses"], timeout=5)
        assert record["responses"][0]["type"] == 5, "a public 'thinking…' first"
        assert record["responses"][0]["at"] - sent_at < 3.0
        original = record["original"]
        await fake.wait_for(lambda: fake.message(original)["attachments"], timeout=120)
        message = fake.message(original)
        # Progress came first, as edits of the same response.
        texts = [e["body"].get("content", "") for e in record["edits"] if e["body"]]
        assert any("queue" in t or "Starting" in t or "Painting" in t for t in texts[:-1]), texts
        # The result: one PNG, caption with preset, seed and likeness, the four buttons.
        assert len(fake.files[original]) == 1
        image = Image.open(io.BytesIO(fake.files[original][0]))
        assert image.format == "PNG" and image.width >= 64
        assert read_provenance(fake.files[original][0]) is not None, "the AI-generated marker reaches Discord"
        assert not image.getexif(), "no EXIF (camera, GPS) from the selfie"
        result_id = await _linked(client, message)
        assert result_id is not None, "the result message is linked to its result"
        result = await client.core.queue.get_result(result_id)
        assert f"seed {result.seeds[0]}" in message["content"]
        score = result.metadata.likeness_scores[0]  # None: no face in the tiny output
        assert (f"Likeness {score:.0f} %" if score is not None else "Likeness n/a") in message["content"]
        buttons = [b for row in message["components"] for b in row["components"]]
        assert [b["custom_id"] for b in buttons] == [f"lk:{a}:{result_id}" for a in ("reroll", "edit", "vary", "full")]
        assert [b["label"] for b in buttons] == ["🔄 Reroll", "✏️ Edit", "✨ Variations", "📥 Full size"]
        assert await _pending(client) == 0, "the delivery was acked"

        no_face = portrait(fake, fake.add_attachment(png("peachpuff")))
        await fake.dispatch("INTERACTION_CREATE", no_face)
        await fake.wait_for(lambda: fake.interactions[no_face["token"]]["original"], timeout=5)
        answer = await wait_text(fake, fake.interactions[no_face["token"]]["original"], "couldn't find a face", 60)
        assert not answer["attachments"] and not answer["components"]


async def _private(fake: FakeDiscord, payload: dict[str, Any]) -> str:
    await fake.dispatch("INTERACTION_CREATE", payload)
    texts = await fake.wait_for(lambda: ephemeral_texts(fake, payload["token"]), timeout=5)
    return str(texts[0])


async def _linked(client: LikenessClient, message: dict[str, str]) -> str | None:
    """The result a message is linked to (the link is written right after the send returns)."""
    for _ in range(50):
        linked = await client.core.result_for_message("discord", message["channel_id"], message["id"])
        if linked is not None:
            return linked
        await asyncio.sleep(0.05)
    return None


async def _pending(client: LikenessClient) -> int:
    info = await client.core.queue.redis.xpending("likeness:deliveries:discord", "bots")
    return int(info["pending"])


async def test_progress_edits_show_percent_and_are_throttled(settings: Settings, fake: FakeDiscord) -> None:
    async with running_bot(settings, fake), running_worker(settings):
        payload, message = await request_portrait(fake, prompt="sleep=3")
        edits = fake.interactions[payload["token"]]["edits"]
        progress = [e for e in edits if not e["files"]]
        assert any("%" in e["body"]["content"] for e in progress), [e["body"] for e in progress]
        gaps = [b["at"] - a["at"] for a, b in itertools.pairwise(progress)]
        assert gaps and min(gaps) >= 0.9, gaps
        assert edits[-1]["files"], "the result is the last edit: no progress text after it"
        assert "seed" in message["content"]


async def test_autocomplete_suggests_presets_and_fusions(settings: Settings, fake: FakeDiscord) -> None:
    async with running_bot(settings, fake):
        answers = {}
        for text in ("ghib", "ghibli+", "ghibli:0.7+he"):
            payload = autocomplete(fake, text)
            await fake.dispatch("INTERACTION_CREATE", payload)
            record = fake.interactions[payload["token"]]
            await fake.wait_for(lambda record=record: record["responses"], timeout=5)
            assert record["responses"][0]["type"] == 8
            answers[text] = [c["value"] for c in record["responses"][0]["data"]["choices"]]
    assert answers["ghib"] == ["ghibli"]
    assert "ghibli+headshot" in answers["ghibli+"] and "ghibli+ghibli" not in answers["ghibli+"]
    assert all(v.startswith("ghibli+") for v in answers["ghibli+"]) and len(answers["ghibli+"]) <= 25
    assert answers["ghibli:0.7+he"][0] == "ghibli:0.7+headshot", "prefix matches first, weights kept"


async def test_presets_cancel_forget_and_stats(settings: Settings, fake: FakeDiscord) -> None:
    async with running_bot(settings, fake) as client, running_worker(settings):
        presets = slash(fake, "presets")
        await fake.dispatch("INTERACTION_CREATE", presets)
        await fake.wait_for(lambda: "".join(ephemeral_texts(fake, presets["token"])).count("—") >= 19, timeout=5)
        listing = "\n".join(ephemeral_texts(fake, presets["token"]))
        assert all(name in listing for name in client.core.presets.names())

        long_job = portrait(fake, fake.add_attachment(png()), prompt="sleep=20")
        await fake.dispatch("INTERACTION_CREATE", long_job)
        await fake.wait_for(lambda: fake.interactions[long_job["token"]]["edits"], timeout=5)
        cancel = slash(fake, "cancel")
        await fake.dispatch("INTERACTION_CREATE", cancel)
        await fake.wait_for(lambda: ephemeral_texts(fake, cancel["token"]), timeout=5)
        assert "Cancelled 1" in ephemeral_texts(fake, cancel["token"])[0]
        await wait_text(fake, fake.interactions[long_job["token"]]["original"], "Cancelled", timeout=5)

        forget = slash(fake, "forget")
        await fake.dispatch("INTERACTION_CREATE", forget)
        await fake.wait_for(lambda: ephemeral_texts(fake, forget["token"]), timeout=5)
        assert "deleted everything" in ephemeral_texts(fake, forget["token"])[0]

        denied = slash(fake, "stats", user_id=USER)
        allowed = slash(fake, "stats", user_id=ADMIN)
        for payload in (denied, allowed):
            await fake.dispatch("INTERACTION_CREATE", payload)
            await fake.wait_for(lambda payload=payload: ephemeral_texts(fake, payload["token"]), timeout=5)
        assert "admins" in ephemeral_texts(fake, denied["token"])[0]
        assert "jobs today" in ephemeral_texts(fake, allowed["token"])[0]


async def test_buttons_work_after_a_restart(settings: Settings, fake: FakeDiscord) -> None:
    async with running_worker(settings):
        async with running_bot(settings, fake):
            _, first = await request_portrait(fake)
        async with running_bot(settings, fake, consumer="after-restart") as client:
            ids = buttons(first)
            first_result = ids["reroll"].split(":")[2]
            first_seed = (await client.core.queue.get_result(first_result)).seeds[0]

            press = button(fake, int(first["id"]), ids["reroll"])
            await fake.dispatch("INTERACTION_CREATE", press)
            await fake.wait_for(lambda: fake.interactions[press["token"]]["original"], timeout=5)
            rerolled = await wait_result(fake, fake.interactions[press["token"]]["original"])
            new_result = buttons(rerolled)["reroll"].split(":")[2]
            assert new_result != first_result
            assert (await client.core.queue.get_result(new_result)).seeds[0] != first_seed
            assert fake.message(first["id"])["attachments"], "the first result stays as it was"

            vary = button(fake, int(first["id"]), ids["vary"])
            await fake.dispatch("INTERACTION_CREATE", vary)
            await fake.wait_for(lambda: fake.interactions[vary["token"]]["original"], timeout=5)
            varied = await wait_result(fake, fake.interactions[vary["token"]]["original"])
            assert len(varied["attachments"]) == 4

            full = button(fake, int(first["id"]), ids["full"])
            await fake.dispatch("INTERACTION_CREATE", full)
            record = fake.interactions[full["token"]]
            await fake.wait_for(lambda: record["followups"], timeout=5)
            file_message = fake.message(record["followups"][0])
            assert file_message["flags"] & 64, "full size is sent privately"
            assert fake.files[int(file_message["id"])] == [fake.files[int(first["id"])][0]]
            # Someone else pressing the same button gets a refusal, not the file
            stranger = button(fake, int(first["id"]), ids["full"], user_id=OTHER)
            await fake.dispatch("INTERACTION_CREATE", stranger)
            refused = await fake.wait_for(
                lambda: [t for t in ephemeral_texts(fake, stranger["token"]) if "only the person" in t.lower()],
                timeout=5,
            )
            assert refused
            assert not any(fake.files.get(int(m)) for m in fake.interactions[stranger["token"]]["followups"])

            edit = button(fake, int(first["id"]), ids["edit"])
            await fake.dispatch("INTERACTION_CREATE", edit)
            await fake.wait_for(lambda: fake.interactions[edit["token"]]["responses"], timeout=5)
            modal = fake.interactions[edit["token"]]["responses"][0]
            assert modal["type"] == 9 and modal["data"]["custom_id"] == f"lk:editmodal:{first_result}"

        async with running_bot(settings, fake, consumer="second-restart") as client:
            submit = modal_submit(fake, modal["data"]["custom_id"], "make the hair blue")
            await fake.dispatch("INTERACTION_CREATE", submit)
            await fake.wait_for(lambda: fake.interactions[submit["token"]]["original"], timeout=5)
            edited = await wait_result(fake, fake.interactions[submit["token"]]["original"])
            assert "make the hair blue" in edited["content"]
            edit_result = await client.core.queue.get_result(buttons(edited)["reroll"].split(":")[2])
            assert edit_result.kind == "edit" and edit_result.parent_id == first_result


async def test_only_the_requester_may_change_a_result_unless_the_server_collaborates(
    settings: Settings, fake: FakeDiscord
) -> None:
    async with running_bot(settings, fake) as client, running_worker(settings):
        _, result = await request_portrait(fake)
        press = button(fake, int(result["id"]), buttons(result)["reroll"], user_id=OTHER)
        await fake.dispatch("INTERACTION_CREATE", press)
        await fake.wait_for(lambda: ephemeral_texts(fake, press["token"]), timeout=5)
        assert "Only the person who asked" in ephemeral_texts(fake, press["token"])[0]
        assert fake.interactions[press["token"]]["responses"][0]["type"] == 4, "refused without a public answer"

        member_only = slash(fake, "settings", [{"name": "collaborate", "type": 5, "value": True}], permissions="0")
        answer = await _private(fake, member_only)
        assert "Only members who may manage this server" in answer
        admin = slash(fake, "settings", [{"name": "collaborate", "type": 5, "value": True}], user_id=OTHER)
        assert "collaborate: True" in await _private(fake, admin)
        assert (await client.core.community.get("discord", str(GUILD_ID))).collaborate, "per server"
        press = button(fake, int(result["id"]), buttons(result)["reroll"], user_id=OTHER)
        await fake.dispatch("INTERACTION_CREATE", press)
        await fake.wait_for(lambda: fake.interactions[press["token"]]["original"], timeout=5)
        await wait_result(fake, fake.interactions[press["token"]]["original"])


async def test_context_menus_reroll_and_edit(settings: Settings, fake: FakeDiscord) -> None:
    async with running_bot(settings, fake), running_worker(settings):
        _, result = await request_portrait(fake)
        menu = context_menu(fake, "Reroll", int(result["id"]))
        await fake.dispatch("INTERACTION_CREATE", menu)
        await fake.wait_for(lambda: fake.interactions[menu["token"]]["original"], timeout=5)
        await wait_result(fake, fake.interactions[menu["token"]]["original"])

        edit = context_menu(fake, "Edit image", int(result["id"]))
        await fake.dispatch("INTERACTION_CREATE", edit)
        await fake.wait_for(lambda: fake.interactions[edit["token"]]["responses"], timeout=5)
        assert fake.interactions[edit["token"]]["responses"][0]["type"] == 9

        not_ours = reply(fake, result, "hello", mention=False)
        menu = context_menu(fake, "Reroll", int(not_ours["id"]))
        await fake.dispatch("INTERACTION_CREATE", menu)
        await fake.wait_for(lambda: ephemeral_texts(fake, menu["token"]), timeout=5)
        assert "isn't one of my portraits" in ephemeral_texts(fake, menu["token"])[0]


@pytest.mark.parametrize("emoji", ["🔄", "🎲", "👎🏽"])
async def test_reaction_rerolls_a_result(settings: Settings, fake: FakeDiscord, emoji: str) -> None:
    async with running_bot(settings, fake), running_worker(settings):
        _, result = await request_portrait(fake)
        before = set(fake.messages)
        await fake.dispatch("MESSAGE_REACTION_ADD", reaction(result, "🔄", user_id=OTHER))
        await fake.dispatch("MESSAGE_REACTION_ADD", reaction(result, emoji, user_id=USER))
        new = await fake.wait_for(lambda: [m for m in set(fake.messages) - before if fake.messages[m]["attachments"]])
        rerolled = fake.message(new[0])
        assert str(rerolled["message_reference"]["message_id"]) == result["id"], "the new image replies to the old one"
        await asyncio.sleep(0.5)
        assert len(set(fake.messages) - before) == 1, "only the requester's reaction counts (progress became result)"
        assert buttons(rerolled)["reroll"] != buttons(result)["reroll"]


async def test_reply_mentioning_the_bot_edits_the_result(settings: Settings, fake: FakeDiscord) -> None:
    async with running_bot(settings, fake), running_worker(settings):
        _, result = await request_portrait(fake)
        ask = reply(fake, result, "make the hair blue")
        before = set(fake.messages)
        await fake.dispatch("MESSAGE_CREATE", ask)
        edited = await fake.wait_for(
            lambda: [m for m in set(fake.messages) - before if fake.messages[m]["attachments"]]
        )
        assert len(set(fake.messages) - before) == 1, "the progress reply became the edited image"
        message = fake.message(edited[0])
        assert str(message["message_reference"]["message_id"]) == ask["id"], "the edit replies to the request"
        assert "make the hair blue" in message["content"] and buttons(message)

        stranger = reply(fake, result, "make it purple", user_id=OTHER)
        before = set(fake.messages)
        await fake.dispatch("MESSAGE_CREATE", stranger)
        refused = await fake.wait_for(lambda: [m for m in set(fake.messages) - before])
        assert "Only the person who asked" in fake.message(refused[0])["content"]


@pytest.mark.parametrize("age_s", [20 * 60, 0], ids=["older-than-15-min", "refused-by-discord"])
async def test_late_result_after_the_token_expired_is_posted_in_the_channel(
    settings: Settings, fake: FakeDiscord, age_s: float
) -> None:
    async with running_bot(settings, fake) as client, running_worker(settings):
        payload = portrait(fake, fake.add_attachment(png()), prompt="sleep=1", created_at=time.time() - age_s)
        record = fake.interactions[payload["token"]]
        await fake.dispatch("INTERACTION_CREATE", payload)
        await fake.wait_for(lambda: record["original"], timeout=5)
        fake.expired_tokens.add(payload["token"])  # Discord refuses the token from now on
        posted = await fake.wait_for(
            lambda: [m for m in fake.channel_messages(TEXT_CHANNEL_ID) if m["attachments"]], timeout=20
        )
        message = posted[0]
        assert str(message["message_reference"]["message_id"]) == str(record["original"])
        assert buttons(message)
        assert await _linked(client, message) == buttons(message)["reroll"].split(":")[2]
        if age_s:
            assert not [r for r in fake.calls("PATCH", payload["token"]) if r.files], "the dead token is not used"


async def test_thread_per_request_takes_edits_by_mention(
    make_settings: Callable[..., Settings], redis_url: str, fake: FakeDiscord
) -> None:
    settings = make_settings(redis_url=redis_url, discord_api_url=fake.api_url, discord_threads=True)
    async with running_bot(settings, fake) as client, running_worker(settings):
        _, result = await request_portrait(fake)
        await fake.wait_for(lambda: fake.threads, timeout=5)
        thread_id = int(fake.threads[0]["id"])
        assert thread_id == int(result["id"]), "the thread hangs under the result"
        howto = await fake.wait_for(lambda: fake.channel_messages(thread_id), timeout=5)
        assert "mention" in howto[0]["content"]
        edits = []
        for change in ("make the hair blue", "add sunglasses"):
            before = set(fake.messages)
            await fake.dispatch("MESSAGE_CREATE", user_message(fake, thread_id, change))
            message = await new_image_message(fake, before)
            assert int(message["channel_id"]) == thread_id and change in message["content"]
            edits.append(await client.core.queue.get_result(await _linked(client, message) or ""))
        first_result = buttons(result)["reroll"].split(":")[2]
        assert edits[0].parent_id == first_result
        assert edits[1].parent_id == edits[0].result_id, "each edit in the thread builds on the last one"


async def test_origin_carries_the_interaction_and_the_channel_flag(settings: Settings, fake: FakeDiscord) -> None:
    async with running_bot(settings, fake) as client, running_worker(settings):
        payload, message = await request_portrait(fake, channel_id=NSFW_CHANNEL_ID)
        result = await client.core.queue.get_result(buttons(message)["reroll"].split(":")[2])
        origin = result.origin
        assert origin.age_restricted, "an NSFW channel is age-restricted"
        assert origin.extra["token"] == payload["token"] and origin.extra["app_id"] == str(APP_ID)
        assert origin.extra["guild_id"] == str(GUILD_ID) and origin.chat_id == str(NSFW_CHANNEL_ID)
        assert origin.user_id == str(USER)


@pytest.mark.parametrize("channel_id", [NSFW_CHANNEL_ID, TEXT_CHANNEL_ID], ids=["age-restricted", "normal"])
async def test_flagged_images_are_spoilered_or_withheld(
    make_settings: Callable[..., Settings], redis_url: str, fake: FakeDiscord, channel_id: int
) -> None:
    settings = make_settings(redis_url=redis_url, discord_api_url=fake.api_url, allow_nsfw_age_restricted=True)
    async with running_bot(settings, fake) as client, running_worker(settings):
        await client.core.community.update("discord", str(GUILD_ID), allow_nsfw=True)
        _, message = await request_portrait(fake, channel_id=channel_id)
        record = await client.core.queue.get_result(buttons(message)["reroll"].split(":")[2])
        # The same result as if the NSFW guard had flagged it, delivered late (a channel message).
        flagged = record.model_copy(update={"metadata": record.metadata.model_copy(update={"nsfw_scores": (0.99,)})})
        origin = record.origin.model_copy(update={"extra": {**record.origin.extra, "token_at": "0"}})
        delivery = Delivery(job_id="flagged-job", kind="portrait", origin=origin, result=flagged)
        await append_delivery(client.core.queue.redis, delivery, marker_ttl_s=60)
        before = {m["id"] for m in fake.channel_messages(channel_id)}
        posted = await fake.wait_for(lambda: [m for m in fake.channel_messages(channel_id) if m["id"] not in before])
    if channel_id == NSFW_CHANNEL_ID:
        assert posted[0]["attachments"][0]["filename"].startswith("SPOILER_")
        assert "spoiler" in posted[0]["content"]
    else:
        assert not posted[0]["attachments"] and "won't post it here" in posted[0]["content"]


async def test_a_delivery_that_failed_for_now_is_sent_after_a_restart(settings: Settings, fake: FakeDiscord) -> None:
    async with running_worker(settings):
        async with running_bot(settings, fake) as client:
            _, message = await request_portrait(fake)
            record = await client.core.queue.get_result(buttons(message)["reroll"].split(":")[2])
            late = record.origin.model_copy(update={"extra": {**record.origin.extra, "token_at": "0"}})
            fake.failing_posts.append(503)  # Discord has a bad moment
            await append_delivery(
                client.core.queue.redis,
                Delivery(job_id="late-job", kind="portrait", origin=late, result=record),
                marker_ttl_s=60,
            )
            await fake.wait_for(lambda: not fake.failing_posts, timeout=10)
            await asyncio.sleep(0.3)
            assert await _pending(client) == 1, "not acked: it will be sent again"
        before = {m["id"] for m in fake.channel_messages(TEXT_CHANNEL_ID)}
        async with running_bot(settings, fake) as client:  # same consumer name: its own backlog comes first
            posted = await fake.wait_for(
                lambda: [m for m in fake.channel_messages(TEXT_CHANNEL_ID) if m["id"] not in before], timeout=10
            )
            assert posted[0]["attachments"]
            for _ in range(50):
                if await _pending(client) == 0:
                    break
                await asyncio.sleep(0.05)
            assert await _pending(client) == 0


async def test_a_result_finished_while_the_bot_was_down_edits_the_response_through_the_stored_token(
    settings: Settings, fake: FakeDiscord
) -> None:
    """A new client, which never saw the interaction, edits its response from the token in the job's origin
    (`discord.Webhook.partial(...).edit_message("@original")`), and the buttons it attaches work."""
    async with running_bot(settings, fake) as client:
        payload = portrait(fake, fake.add_attachment(png()))
        record = fake.interactions[payload["token"]]
        await fake.dispatch("INTERACTION_CREATE", payload)
        await fake.wait_for(lambda: record["original"], timeout=5)
        for _ in range(100):  # queued: the bot may go
            if await client.core.queue.redis.zcard(keys.ARQ_QUEUE):
                break
            await asyncio.sleep(0.05)
    async with running_worker(settings), QueueClient(settings) as queue:
        for _ in range(200):  # the job ran, and its delivery waits for a bot
            if await queue.redis.xlen(keys.deliveries("discord")):
                break
            await asyncio.sleep(0.05)
        assert not fake.message(record["original"])["attachments"], "nobody delivered it yet"
        async with running_bot(settings, fake) as client:
            message = await wait_result(fake, record["original"])
            sent = [r for r in fake.calls("PATCH", payload["token"]) if r.files]
            assert len(sent) == 1 and sent[0].path.endswith("/messages/@original")
            assert list(buttons(message)) == ["reroll", "edit", "vary", "full"]
            assert await _linked(client, message) == buttons(message)["reroll"].split(":")[2]
            press = button(fake, int(message["id"]), buttons(message)["reroll"])
            await fake.dispatch("INTERACTION_CREATE", press)
            await fake.wait_for(lambda: fake.interactions[press["token"]]["original"], timeout=5)
            rerolled = await wait_result(fake, fake.interactions[press["token"]]["original"])
            assert buttons(rerolled)["reroll"] != buttons(message)["reroll"]


async def test_acknowledges_within_3_s_even_when_the_download_is_slow(settings: Settings, fake: FakeDiscord) -> None:
    fake.cdn_delay_s = 3.5
    async with running_bot(settings, fake), running_worker(settings):
        payload = portrait(fake, fake.add_attachment(png()))
        record = fake.interactions[payload["token"]]
        sent_at = time.monotonic()
        await fake.dispatch("INTERACTION_CREATE", payload)
        await fake.wait_for(lambda: record["responses"], timeout=5)
        assert record["responses"][0]["type"] == 5 and record["responses"][0]["at"] - sent_at < 1.0
        assert not fake.message(record["original"])["attachments"]
        await wait_result(fake, record["original"])
