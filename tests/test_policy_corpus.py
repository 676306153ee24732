"""Prompt policy against a corpus: evasions must be refused (>= 98 %), benign near misses accepted (>= 98 %).

The corpus is data (`tests/data/policy/evasions.txt`, `benign.txt`): one prompt per line, `#` comments, a
`# --- <section> ---` line before each group. Run with `-s` (or `-rP`) to see both rates and every miss;
`python -m benchmarks --only policy` prints the same rates with the cost per check.
"""

from __future__ import annotations

import pytest

from likeness.bot._policy import PromptPolicy
from tests.helpers.policy_corpus import LANGUAGES, TARGET, prompts, read_corpus


@pytest.fixture(scope="module")
def policy() -> PromptPolicy:
    return PromptPolicy.load()


def _report(title: str, rate: float, total: int, misses: list[str]) -> None:
    lines = [f"{title}: {rate:.1%} of {total} (target >= {TARGET:.0%}), {len(misses)} missed"]
    lines += [f"  {miss}" for miss in misses]
    print("\n" + "\n".join(lines))


def test_evasions_are_refused(policy: PromptPolicy) -> None:
    evasions = prompts("evasions")
    assert len(evasions) >= 300
    misses = [p for p in evasions if policy.violation(p) is None]
    rate = 1 - len(misses) / len(evasions)
    _report("evasions refused", rate, len(evasions), [repr(m) for m in misses])
    assert rate >= TARGET, misses


def test_benign_near_misses_are_accepted(policy: PromptPolicy) -> None:
    benign = prompts("benign")
    assert len(benign) >= 300
    refused = [(p, rule) for p in benign if (rule := policy.violation(p)) is not None]
    rate = 1 - len(refused) / len(benign)
    _report("benign accepted", rate, len(benign), [f"{p!r} -> {rule}" for p, rule in refused])
    assert rate >= TARGET, refused


@pytest.mark.parametrize("name", ["evasions", "benign"])
def test_corpus_covers_every_language_and_category(name: str) -> None:
    sections = read_corpus(name)
    for language in LANGUAGES:
        assert len(sections.get(language, [])) >= 8, f"{name}.txt: {language}"
    assert sum(len(section) for title, section in sections.items() if title not in LANGUAGES) >= 150


def test_corpus_has_no_duplicates_or_overlap() -> None:
    evasions, benign = prompts("evasions"), prompts("benign")
    assert len(set(evasions)) == len(evasions)
    assert len(set(benign)) == len(benign)
    assert not set(evasions) & set(benign)
