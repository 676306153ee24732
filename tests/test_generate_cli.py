"""`likeness generate` end to end in a subprocess, on the tiny model (offline, CPU)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from PIL import Image

from likeness.config import Settings
from likeness.generation import PortraitRequest, StableDiffusionEngine
from likeness.images import load_image
from likeness.provenance import mark, read_provenance
from likeness.requests import size_for
from tests.helpers.faces import astronaut, jpeg_with_exif

ROOT = Path(__file__).parents[1]


def _run(args: list[str], data_dir: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIKENESS_")}
    env.update(
        LIKENESS_MODEL="tiny",
        LIKENESS_DEVICE="cpu",
        LIKENESS_DATA_DIR=str(data_dir),
        HF_HUB_OFFLINE="1",
        PYTHONPATH=str(ROOT),
    )
    return subprocess.run(
        [sys.executable, "-m", "likeness", "generate", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_generate_writes_clean_pngs_of_the_format_size(
    tmp_path: Path, shared_data_dir: Path, make_settings: Callable[..., Settings]
) -> None:
    selfie = tmp_path / "me.jpg"
    selfie.write_bytes(jpeg_with_exif(astronaut()))
    out = tmp_path / "out" / "nested"
    proc = _run(
        [str(selfie), "--preset", "ghibli", "--format", "story", "--seed", "7", "-n", "2", "-o", str(out)],
        shared_data_dir,
    )
    assert proc.returncode == 0, proc.stderr
    paths = [Path(line) for line in proc.stdout.splitlines()]
    assert [p.name for p in paths] == ["me-ghibli-7.png", "me-ghibli-8.png"]
    for path in paths:
        with Image.open(path) as img:
            assert img.format == "PNG"
            assert img.size == size_for("story", 64, 16)
            assert not img.getexif() and "exif" not in img.info
        marker = read_provenance(path.read_bytes())
        assert marker is not None and marker["watermark"] is not None, "outputs are marked as AI-generated"
    with Image.open(paths[0]) as a, Image.open(paths[1]) as b:
        assert a.tobytes() != b.tobytes()  # two seeds, two pictures
        # The same request in this process gives the same pixels: same weights on disk, same code path.
        engine = StableDiffusionEngine.load(make_settings())
        try:
            request = PortraitRequest(
                selfie=load_image(selfie.read_bytes(), max_bytes=10**8, max_pixels=10**8),
                preset=engine.presets.resolve("ghibli"),
                format="story",
                seeds=(7, 8),
            )
            expected = engine.portrait(request).images
        finally:
            engine.close()
        assert a.convert("RGB").tobytes() == mark(expected[0]).tobytes()
        assert b.convert("RGB").tobytes() == mark(expected[1]).tobytes()


def test_generate_rejects_bad_input_with_one_clear_line(tmp_path: Path, shared_data_dir: Path) -> None:
    text_file = tmp_path / "selfie.jpg"
    text_file.write_text("this is not a photo")
    proc = _run([str(text_file), "-o", str(tmp_path / "out")], shared_data_dir)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "likeness generate: error: That file isn't an image I can read. "
        "Please send a photo (JPEG, PNG, WebP, AVIF or HEIC)."
    ]
    assert proc.stdout == "" and not (tmp_path / "out").exists()

    selfie = tmp_path / "me.png"
    astronaut().save(selfie)
    for args, message in (
        (["--preset", "nope"], "I don't know the preset “nope”"),
        (["--format", "poster"], "I don't know the format “poster”"),
        (["-n", "0"], "--count must be between 1 and 16"),
    ):
        proc = _run([str(selfie), *args, "-o", str(tmp_path / "out")], shared_data_dir)
        assert proc.returncode == 1, args
        assert len(proc.stderr.strip().splitlines()) == 1 and message in proc.stderr, proc.stderr
    missing = _run([str(tmp_path / "missing.jpg")], shared_data_dir)
    assert missing.returncode == 1 and "cannot read" in missing.stderr and "Traceback" not in missing.stderr
