"""7. Prompt policy: the corpus rates and the cost of one `PromptPolicy.check` (the bot calls it per request).

Refused share of `tests/data/policy/evasions.txt`, accepted share of `benign.txt` (targets >= 98 %), and the
time per check: every corpus prompt timed one by one (best of 5 passes each), then prompts built to be
expensive, 50 checks each, 400 characters each (the default `max_prompt_chars`): a long English prompt, letters spaced
apart, starred-out words, mixed scripts, random code points. No GPU, no model: runs in a second or two.
Also `python -m benchmarks.policy` on its own.
"""

from __future__ import annotations

import random
import statistics
import time

from benchmarks._common import BenchContext, BenchResult, Target, format_table, percentile
from likeness.bot._policy import PromptPolicy
from likeness.errors import PromptRefused
from tests.helpers.policy_corpus import TARGET, prompts

NAME = "policy"
TITLE = "Prompt policy: evasions refused, benign near misses accepted, cost per check (CPU)"
PASSES = 5


def hostile_prompts() -> dict[str, str]:
    """400-character prompts that make the matcher work hardest."""
    rnd = random.Random(15)
    return {
        "400 chars, English": ("viking warrior in the snow, cinematic lighting, 8k, by greg rutkowski, sexy, " * 6)[
            :400
        ],
        "400 chars, spaced letters": ("n u d e s e x y a b c d " * 20)[:400],
        "400 chars, starred words": ("p*rn s*x b**bs " * 30)[:400],
        "400 chars, mixed scripts": ("голые деревья, 裸足の少女, 15 лет назад, تعري, nü\u200bde 🅽🆄 " * 8)[:400],
        "400 chars, random code points": "".join(chr(rnd.randrange(0x20, 0x30000)) for _ in range(400)),
    }


def run(ctx: BenchContext | None = None) -> BenchResult:
    quick = bool(ctx and ctx.quick)
    started = time.perf_counter()
    policy = PromptPolicy.load()
    load_s = time.perf_counter() - started
    result = BenchResult(NAME, TITLE, details={"load_s": round(load_s, 3)})
    passes, runs = (2, 5) if quick else (PASSES, 50)

    for corpus, want_refused in (("evasions", True), ("benign", False)):
        texts = prompts(corpus)
        wrong = [t for t in texts if _refused(policy, t) != want_refused]
        rate = 1 - len(wrong) / len(texts)
        seconds = [min(_timed(policy, t) for _ in range(passes)) for t in texts]
        result.rows.append(_row(corpus, len(texts), "refused" if want_refused else "accepted", rate, seconds))
        result.details[f"{corpus}_wrong"] = wrong
        result.targets.append(Target(f"{corpus} {'refused' if want_refused else 'accepted'}", rate, TARGET, ">="))

    worst = 0.0
    for name, text in hostile_prompts().items():
        seconds = [_timed(policy, text) for _ in range(runs)]
        worst = max(worst, statistics.median(seconds))
        result.rows.append(_row(name, 1, "refused" if _refused(policy, text) else "accepted", None, seconds))
    typical = statistics.median(r["p50_us"] for r in result.rows[:2]) / 1e6
    result.targets.append(Target("typical check (median p50)", typical * 1000, 1.0, "<=", " ms"))
    result.targets.append(Target("worst 400-char check", worst * 1000, 5.0, "<=", " ms"))
    result.notes.append(f"policy load (defaults + 15 language files, compiled): {load_s * 1000:.0f} ms, once per bot")
    return result


def _refused(policy: PromptPolicy, text: str) -> bool:
    try:
        policy.check(text)
    except PromptRefused:
        return True
    return False


def _timed(policy: PromptPolicy, text: str) -> float:
    start = time.perf_counter()
    _refused(policy, text)
    return time.perf_counter() - start


def _row(corpus: str, count: int, verdict: str, rate: float | None, seconds: list[float]) -> dict[str, object]:
    micros = [s * 1e6 for s in seconds]
    return {
        "corpus": corpus,
        "count": count,
        "verdict": verdict,
        "rate": None if rate is None else f"{rate:.1%}",
        "p50_us": round(statistics.median(micros), 1),
        "p95_us": round(percentile(micros, 95), 1),
        "max_us": round(max(micros), 1),
        "checks_per_s": round(1e6 / statistics.median(micros)),
    }


if __name__ == "__main__":
    outcome = run()
    print(format_table(outcome.rows))
    for target in outcome.targets:
        print(target.describe())
    for note in outcome.notes:
        print(f"note: {note}")
