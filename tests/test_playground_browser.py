"""A person using the playground in a real browser, against `likeness up` (tiny model, private Redis).

Headless Debian Chromium driven by Playwright; no browser download. Skipped only when Chromium is not
installed (`.ci/run` installs it).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from likeness.redis_server import free_port
from tests.helpers.faces import astronaut

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_ARGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip

pytestmark = [
    pytest.mark.browser,
    pytest.mark.timeout(240),
    pytest.mark.skipif(CHROMIUM is None, reason="Debian chromium is not installed (apt-get install chromium)"),
]


@pytest.fixture
def likeness_up(tmp_path: Path, shared_data_dir: Path, tiny_engine: object) -> Iterator[str]:
    """`likeness up` in a subprocess: private Redis, tiny model, playground on a free loopback port."""
    port = free_port()
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    # Reuse the tiny weights the session already built (`tiny_engine`) instead of building them again.
    (data_dir / "models").symlink_to(shared_data_dir / "models", target_is_directory=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIKENESS_")}
    env.update(
        LIKENESS_MODEL="tiny",
        LIKENESS_DEVICE="cpu",
        LIKENESS_DATA_DIR=str(data_dir),
        LIKENESS_PLAYGROUND_PORT=str(port),
        HF_HUB_OFFLINE="1",
        PYTHONPATH=str(ROOT),
        PYTHONUNBUFFERED="1",
    )
    log = (tmp_path / "up.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "likeness", "up"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while "Likeness is up" not in (tmp_path / "up.log").read_text():
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail("likeness up did not start:\n" + (tmp_path / "up.log").read_text())
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
    text = (tmp_path / "up.log").read_text()
    assert proc.returncode == 0, text
    assert "Stopped." in text
    leftover = subprocess.run(["pgrep", "-f", str(data_dir / "redis")], capture_output=True, text=True)
    assert leftover.stdout.strip() == "", "the private Redis was stopped with `likeness up`"
    assert (data_dir / "redis" / "appendonlydir").is_dir(), "the private Redis keeps an append-only file"


async def test_upload_generate_reroll_and_edit_in_a_browser(likeness_up: str, tmp_path: Path) -> None:
    from playwright.async_api import async_playwright, expect

    selfie = tmp_path / "selfie.png"
    astronaut().save(selfie)
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = await browser.new_page()
        await page.goto(likeness_up)
        await page.set_input_files("#selfie", str(selfie))
        await page.click("button[data-preset=ghibli]")
        await expect(page.locator("#preset")).to_have_value("ghibli")
        await page.click("#generate")

        first = page.locator("#images img").first
        await expect(first).to_be_visible(timeout=60_000)
        await expect(page.locator("#status")).to_have_text("✅ Done.", timeout=60_000)
        first_src = await first.get_attribute("src")
        first_png = await (await page.request.get(likeness_up + first_src)).body()
        assert first_png.startswith(b"\x89PNG")
        await expect(page.locator("#caption")).to_contain_text("Likeness")

        await page.click("#reroll")
        await expect(page.locator("#images img").first).not_to_have_attribute("src", first_src, timeout=60_000)
        await expect(page.locator("#status")).to_have_text("✅ Done.", timeout=60_000)
        reroll_src = await page.locator("#images img").first.get_attribute("src")
        reroll_png = await (await page.request.get(likeness_up + reroll_src)).body()
        assert reroll_png != first_png, "a reroll is a different image"

        await page.fill("#instruction", "make the hair blue")
        await page.click("#edit")
        await expect(page.locator("#caption")).to_contain_text("make the hair blue", timeout=60_000)
        await expect(page.locator("#status")).to_have_text("✅ Done.", timeout=60_000)
        edited_src = await page.locator("#images img").first.get_attribute("src")
        assert edited_src not in (first_src, reroll_src)
        await expect(page.locator("#history img")).to_have_count(3)
        await browser.close()
