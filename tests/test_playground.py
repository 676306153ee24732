"""The web playground's API, end to end: aiohttp app → bot core → Redis → worker on the tiny model."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp import FormData
from aiohttp.test_utils import TestClient, TestServer
from PIL import Image

from likeness.bot.playground import build_app, consume_deliveries
from likeness.config import Settings
from likeness.provenance import read_provenance
from tests.helpers.faces import astronaut, jpeg_with_exif
from tests.helpers.stack import running_stack

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def settings(make_settings: Callable[..., Settings], redis_url: str) -> Settings:
    return make_settings(redis_url=redis_url, max_upload_bytes=2_000_000, max_image_pixels=4_000_000)


@pytest.fixture
async def client(settings: Settings, tiny_engine: Any) -> AsyncIterator[TestClient]:
    async with running_stack(settings, tiny_engine) as core:
        deliveries = asyncio.create_task(consume_deliveries(core, "test"))
        async with TestClient(TestServer(build_app(core))) as http:
            yield http
        deliveries.cancel()
        await asyncio.gather(deliveries, return_exceptions=True)


def _selfie_form(preset: str = "ghibli", selfie: bytes | None = None, **fields: str) -> FormData:
    form = FormData()
    form.add_field("selfie", selfie if selfie is not None else jpeg_with_exif(astronaut()), filename="me.jpg")
    form.add_field("preset", preset)
    for key, value in fields.items():
        form.add_field(key, value)
    return form


async def _events(http: TestClient, job_id: str) -> list[tuple[str, dict[str, Any]]]:
    response = await http.get(f"/api/jobs/{job_id}/events")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/event-stream")
    events = []
    for block in (await response.text()).strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines())
        events.append((lines["event"], json.loads(lines["data"])))
    return events


async def _generate(http: TestClient, path: str = "/api/portrait", data: Any = None) -> dict[str, Any]:
    response = await http.post(path, data=data if data is not None else _selfie_form())
    assert response.status == 202, await response.text()
    ticket = await response.json()
    events = await _events(http, ticket["job_id"])
    kind, payload = events[-1]
    assert kind == "result", events
    return payload


async def test_page_and_static_files_are_served(client: TestClient) -> None:
    page = await client.get("/")
    html = await page.text()
    assert page.status == 200 and 'id="portrait-form"' in html and "/static/app.js" in html
    for name, kind in (("app.js", "text/javascript"), ("style.css", "text/css")):
        response = await client.get(f"/static/{name}")
        assert response.status == 200 and response.content_type == kind
    assert (await client.get("/static/../config.py")).status == 404
    assert (await client.get("/static/nope.js")).status == 404


async def test_presets_and_formats_are_listed(client: TestClient) -> None:
    data = await (await client.get("/api/presets")).json()
    names = {p["name"] for p in data["presets"]}
    assert {"ghibli", "viking", "graduation", "action-figure", "headshot"} <= names
    assert all(p["emoji"] and p["description"] for p in data["presets"])
    assert {"square", "story", "banner"} <= {f["name"] for f in data["formats"]}


async def test_portrait_progress_result_and_clean_download(client: TestClient) -> None:
    response = await client.post("/api/portrait", data=_selfie_form("ghibli+headshot", prompt="red scarf", count="2"))
    assert response.status == 202
    ticket = await response.json()
    events = await _events(client, ticket["job_id"])
    stages = [payload["stage"] for kind, payload in events if kind == "progress"]
    assert "step" in stages and stages[-1] == "done"
    kind, result = events[-1]
    assert kind == "result"
    assert len(result["images"]) == 2 and len(set(result["seeds"])) == 2
    assert all(f"seed {seed}" in text for seed, text in zip(result["seeds"], result["captions"], strict=True))
    assert all("Likeness" in text for text in result["captions"])
    download = await client.get(result["images"][0])
    assert download.status == 200 and download.content_type == "image/png"
    data = await download.read()
    with Image.open(io.BytesIO(data)) as image:
        assert "exif" not in image.info
        assert not image.getexif()
    assert read_provenance(data) is not None, "delivered images carry the AI-generated marker"


async def test_reroll_variations_and_edit_make_new_results_with_lineage(client: TestClient) -> None:
    first = await _generate(client)
    reroll = await _generate(client, f"/api/results/{first['result_id']}/reroll")
    assert reroll["parent_id"] == first["result_id"] and reroll["seeds"] != first["seeds"]
    a = await (await client.get(first["images"][0])).read()
    b = await (await client.get(reroll["images"][0])).read()
    assert a != b
    variations = await _generate(client, f"/api/results/{first['result_id']}/variations")
    assert variations["parent_id"] == first["result_id"] and len(variations["images"]) >= 1
    form = FormData()
    form.add_field("instruction", "make the hair blue")
    edited = await _generate(client, f"/api/results/{first['result_id']}/edit", form)
    assert edited["parent_id"] == first["result_id"] and edited["instruction"] == "make the hair blue"


async def test_painted_mask_edit_changes_only_the_painted_area(client: TestClient) -> None:
    first = await _generate(client)
    with Image.open(io.BytesIO(await (await client.get(first["images"][0])).read())) as img:
        source = img.convert("RGB")
    mask = Image.new("L", source.size, 0)
    w, h = source.size
    mask.paste(255, (w // 4, h // 4, w // 2, h // 2))
    buf = io.BytesIO()
    mask.save(buf, "PNG")
    form = FormData()
    form.add_field("instruction", "a golden crown")
    form.add_field("mask", buf.getvalue(), filename="mask.png")
    edited = await _generate(client, f"/api/results/{first['result_id']}/edit", form)
    with Image.open(io.BytesIO(await (await client.get(edited["images"][0])).read())) as img:
        out = img.convert("RGB")
    assert out.size == source.size
    corner = (w - 8, h - 8, w, h)
    assert out.crop(corner).tobytes() == source.crop(corner).tobytes()
    assert (
        out.crop((w // 4, h // 4, w // 2, h // 2)).tobytes() != source.crop((w // 4, h // 4, w // 2, h // 2)).tobytes()
    )


async def test_history_is_private_to_the_session_and_forget_clears_it(client: TestClient) -> None:
    result = await _generate(client)
    history = await (await client.get("/api/history")).json()
    assert [r["result_id"] for r in history["results"]] == [result["result_id"]]
    async with TestClient(TestServer(client.server.app)) as stranger:
        assert (await (await stranger.get("/api/history")).json())["results"] == []
        assert (await stranger.get(result["images"][0])).status == 404
        refused = await stranger.post(f"/api/results/{result['result_id']}/reroll")
        assert refused.status == 400 and "only the person" in (await refused.json())["message"].lower()
    forget = await client.post("/api/forget")
    assert "deleted" in (await forget.json())["message"]
    assert (await (await client.get("/api/history")).json())["results"] == []
    assert (await client.get(result["images"][0])).status in (404, 410)


def _png(size: tuple[int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, "white").save(buf, "PNG")
    return buf.getvalue()


@pytest.mark.parametrize(
    ("fields", "status", "words"),
    [
        ({"selfie": None}, 400, "selfie"),
        ({"selfie": b"this is not an image"}, 400, "image"),
        ({"selfie": b"\x89PNG" + b"0" * 2_100_000}, 413, "too large"),
        ({"selfie": _png((2100, 2100))}, 400, "too many pixels"),
        ({"preset": "gibberish"}, 400, "ghibli"),
        ({"prompt": "x" * 500}, 400, "characters"),
        ({"count": "9"}, 400, "1 to 4"),
        ({"format": "poster"}, 400, "story"),
        ({"preset": ""}, 400, "which style"),
        ({"preset": "   "}, 400, "which style"),
        ({"preset": "g" * 300}, 400, "too long"),
        ({"format": "f" * 100}, 400, "story"),
        ({"selfie": b"\x89PNG" + b"0" * 1_900_000}, 400, "image"),  # MB-sized junk: a clear text, no 500
    ],
)
async def test_bad_uploads_get_clear_answers(
    client: TestClient, fields: dict[str, Any], status: int, words: str
) -> None:
    form = FormData()
    selfie = fields.pop("selfie", jpeg_with_exif(astronaut()))
    if selfie is not None:
        form.add_field("selfie", selfie, filename="me.png")
    form.add_field("preset", fields.pop("preset", "ghibli"))
    for key, value in fields.items():
        form.add_field(key, value)
    response = await client.post("/api/portrait", data=form)
    assert response.status == status
    body = await response.json()
    assert words in body["message"].lower()
    assert (await (await client.get("/api/history")).json())["results"] == []


async def test_redis_down_is_temporarily_unavailable(make_settings: Callable[..., Settings], tiny_engine: Any) -> None:
    from likeness.bot import BotCore
    from likeness.queue import QueueClient
    from likeness.redis_server import free_port

    settings = make_settings(redis_url=f"redis://127.0.0.1:{free_port()}/0")
    async with QueueClient(settings) as queue, TestClient(TestServer(build_app(BotCore(settings, queue)))) as http:
        response = await http.post("/api/portrait", data=_selfie_form())
        assert response.status == 503
        assert "temporarily unavailable" in (await response.json())["message"]


async def test_images_flagged_by_the_safety_check_are_withheld(
    make_settings: Callable[..., Settings], redis_url: str, tiny_engine: Any
) -> None:
    settings = make_settings(redis_url=redis_url, nsfw_threshold=0.0)  # every image counts as flagged
    async with running_stack(settings, tiny_engine) as core:
        deliveries = asyncio.create_task(consume_deliveries(core, "test"))
        async with TestClient(TestServer(build_app(core))) as http:
            result = await _generate(http)
            assert result["images"] == []
            assert any("safety check" in notice for notice in result["notices"])
            assert (await http.get(f"/api/results/{result['result_id']}/images/0")).status == 404
        deliveries.cancel()
        await asyncio.gather(deliveries, return_exceptions=True)


async def test_limits_answer_with_retry_advice(
    make_settings: Callable[..., Settings], redis_url: str, tiny_engine: Any
) -> None:
    settings = make_settings(redis_url=redis_url, rate_limit="1/minute")
    async with running_stack(settings, tiny_engine) as core, TestClient(TestServer(build_app(core))) as http:
        assert (await http.post("/api/portrait", data=_selfie_form())).status == 202
        second = await http.post("/api/portrait", data=_selfie_form())
        assert second.status == 429
        assert "try again in" in (await second.json())["message"]


@pytest.mark.parametrize(
    ("headers", "why"),
    [
        ({"Origin": "https://evil.example"}, "other web pages"),  # a page elsewhere posting to the playground
        ({"Origin": "null"}, "other web pages"),  # sandboxed frames, file:// pages
        ({"Sec-Fetch-Site": "cross-site"}, "other web pages"),
        ({"Host": "evil.example:8080"}, "own address"),  # DNS rebinding: the attacker's name, our address
        ({"Host": "likeness.evil.example"}, "own address"),
    ],
)
async def test_cross_site_writes_and_foreign_hosts_are_refused(
    client: TestClient, headers: dict[str, str], why: str
) -> None:
    response = await client.post("/api/portrait", data=_selfie_form(), headers=headers)
    assert response.status == 403 and why in (await response.json())["message"]
    assert (await (await client.get("/api/history")).json())["results"] == []


async def test_same_site_requests_and_allowed_hosts_are_served(
    make_settings: Callable[..., Settings], redis_url: str, tiny_engine: Any
) -> None:
    settings = make_settings(redis_url=redis_url, playground_allowed_hosts=["likeness-box.lan"])
    async with running_stack(settings, tiny_engine) as core, TestClient(TestServer(build_app(core))) as http:
        own = f"http://{http.host}:{http.port}"
        same = await http.post(
            "/api/portrait", data=_selfie_form(), headers={"Origin": own, "Sec-Fetch-Site": "same-origin"}
        )
        assert same.status == 202
        lan = await http.get("/api/presets", headers={"Host": "likeness-box.lan:8080"})
        assert lan.status == 200
        assert (await http.get("/api/presets", headers={"Host": "other.lan"})).status == 403
