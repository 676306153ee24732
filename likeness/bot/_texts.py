"""Every sentence the bots say, in one place, as plain text with light Markdown-free formatting.

User text never reaches a reply unfiltered: quoted parts go through `likeness.errors.echo` (one line, no
control or bidi characters, clipped) and whole answers through `strip_controls`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from likeness.errors import echo, strip_controls
from likeness.presets import Preset
from likeness.queue import ResultMeta
from likeness.requests import FORMATS

__all__ = [
    "EDIT_HOWTO",
    "HELP",
    "NEED_SELFIE",
    "caption",
    "error_text",
    "presets_text",
    "progress_text",
    "queued_text",
    "stats_text",
]

HELP = """\
📸 Likeness turns a selfie into a portrait that still looks like you.

• Send a photo with the caption /portrait ghibli (or reply /portrait ghibli to a photo).
• Add your own words: /portrait viking standing on a cliff at dawn
• Mix styles: /portrait ghibli+headshot or /portrait ghibli:0.7+headshot:0.3
• Choose a shape: format:story (9:16), instagram (4:5), youtube (16:9), banner (3:1), linkedin, square
• Under each result: 🔄 Reroll, ✏️ Edit, ✨ Variations, 📥 Full size.
• Reply to a result with a change, e.g. “make the hair blue” or “background: Paris at night”.
• /presets lists the styles, /cancel stops your running portrait, /forget deletes everything stored about you.

Your photos are kept at most a day, results a week. Images are marked as AI-generated."""

NEED_SELFIE = (
    "Please send a selfie with it: attach a photo with the caption /portrait <style>, or reply "
    "/portrait <style> to a photo. A clear, front-facing photo works best."
)

EDIT_HOWTO = (
    "✏️ Reply to this image with what to change, for example:\n"
    "• make the hair blue\n• background: Paris at night\n• change the shirt to a tuxedo\n"
    "• add sunglasses\n• lighting: golden hour"
)


def presets_text(presets: Iterable[Preset]) -> str:
    """The /presets answer: one line per preset, then fusion and formats."""
    lines = ["🎨 Styles (use the name after /portrait):", ""]
    lines += [f"{p.emoji} {p.name} — {p.description}" for p in presets]
    lines += [
        "",
        "Mix styles with + and weights: ghibli+headshot, ghibli:0.7+headshot:0.3",
        "Formats: " + ", ".join(FORMATS),
    ]
    return "\n".join(lines)


def queued_text(position: int, eta_s: float | None) -> str:
    """First answer after a request is accepted."""
    if position <= 0:
        return "🎨 Starting your portrait…"
    eta = f", about {_duration(eta_s)}" if eta_s else ""
    return f"⏳ You're #{position} in the queue{eta}."


def progress_text(step: int, total: int) -> str:
    """Progress while generating (percent, as a bar)."""
    pct = int(100 * step / total) if total else 0
    filled = pct // 10
    return f"🎨 Painting… {pct}% " + "▰" * filled + "▱" * (10 - filled)


def caption(metadata: ResultMeta, seed: int, score: float | None) -> str:
    """Caption under a result: preset title, the edit's instruction, seed (type it back with `seed:`), likeness."""
    title = metadata.preset_title or metadata.preset or "portrait"
    parts = [echo(title, 80), f"seed {seed}"]
    if metadata.instruction:
        parts.insert(1, f"“{echo(metadata.instruction, 100)}”")
    parts.append(f"Likeness {score:.0f} %" if score is not None else "Likeness n/a")
    return " · ".join(parts)


def error_text(user_message: str | None, reference: str | None = None) -> str:
    """A user error's own text, or the generic text with a reference for the operator's logs."""
    if user_message:
        return f"⚠️ {strip_controls(user_message)}"
    return f"⚠️ Something went wrong on our side. Please try again. (ref {reference})"


def stats_text(stats: Mapping[str, Any]) -> str:
    """The admin /stats answer from a flat mapping of numbers."""
    lines = ["📊 Likeness stats"]
    lines += [f"• {key.replace('_', ' ')}: {value}" for key, value in stats.items()]
    return "\n".join(lines)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "a moment"
    if seconds < 60:
        return f"{max(1, round(seconds))} s"
    return f"{round(seconds / 60)} min"
