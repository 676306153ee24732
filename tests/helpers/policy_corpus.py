"""The prompt policy's test corpus (`tests/data/policy/`): evasions to refuse, benign near misses to accept.

Shared by `tests/test_policy_corpus.py` and `python -m benchmarks --only policy`. One prompt per line, `#`
comments, a `# --- <section> ---` line before each group (the language sections are named in `LANGUAGES`).
"""

from __future__ import annotations

from pathlib import Path

CORPUS = Path(__file__).parents[1] / "data" / "policy"
TARGET = 0.98  # the share of each corpus the policy must get right (issue 15, section 6)
LANGUAGES = (
    "German",
    "French",
    "Spanish",
    "Italian",
    "Portuguese",
    "Dutch",
    "Polish",
    "Turkish",
    "Russian",
    "Ukrainian",
    "Arabic",
    "Hindi",
    "Japanese",
    "Chinese",
    "Korean",
)


def read_corpus(name: str) -> dict[str, list[str]]:
    """Section title → prompts, in file order (`name` is "evasions" or "benign")."""
    sections: dict[str, list[str]] = {}
    current = "(top)"
    for line in (CORPUS / f"{name}.txt").read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if stripped.startswith("# ---"):
            current = stripped.strip("#- ").strip()
        elif stripped and not stripped.startswith("#"):
            sections.setdefault(current, []).append(line)
    return sections


def prompts(name: str) -> list[str]:
    """Every prompt of a corpus file, in order."""
    return [prompt for section in read_corpus(name).values() for prompt in section]
