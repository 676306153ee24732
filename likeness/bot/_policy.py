"""Prompt policy: block lists and combination rules, checked in the bot core before anything is enqueued.

The lists are data: built-in defaults in `policy_defaults.toml`, extended (or replaced) by the operator's
`settings.blocklist_file` and by per-community `extra_blocked_words`. A prompt is refused when any rule
matches; a rule is a list of groups of word categories and matches when every group has a hit
(`[["explicit", "suggestive"], ["minor"]]` = a sexual term together with a minor term).

Matching resists the usual evasions without Scunthorpe false positives: terms match whole words only
("sex" never matches "Sussex"), against several views of the prompt — accents, case and look-alike letters
folded; leetspeak digits (`s3x`, `$ex`); letters spaced or dotted apart (`n u d e`, `n.u.d.e`); letters
repeated three times or more (`nuuuude`) or doubled vowels (`naaked`). Refusals never echo the words.
"""

from __future__ import annotations

import re
import tomllib
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from likeness.config import Settings
from likeness.errors import Banned, ConfigError, PromptRefused, PromptTooLong

if TYPE_CHECKING:
    from likeness.queue._abuse import AbuseLog

__all__ = ["DEFAULTS_FILE", "PromptPolicy", "screen_request"]

DEFAULTS_FILE = Path(__file__).with_name("policy_defaults.toml")

_BLOCKED = "blocked"  # the category (and rule) of the plain `words` / `regexes` lists

# Cyrillic and Greek letters that look like Latin ones ("sеx" with a Cyrillic е).
_CONFUSABLES = str.maketrans(
    "аеорсухіјѕԁԛԝвкмнтгαβεικνορτυχ",
    "aeopcyxijsdqwbkmhtrabeiknoptyx",
)
_LEET = str.maketrans("0134578@$!|+", "oieastbasilt")
# A mixed token of letters and leet characters; symbols only count when a letter or digit follows them
# ("nude!" keeps its "!", "$ex" becomes "sex").
_LEET_TOKEN = re.compile(r"(?:[a-z0-9]|[@$!|+](?=[a-z0-9]))+")
# Single letters split by short separators: "n u d e", "n.u.d.e", "n-u-d-e".
_SPACED_RUN = re.compile(r"(?<![a-z0-9])(?:[a-z0-9@$][\s.\-_*,/|]{1,3}){2,}[a-z0-9@$](?![a-z0-9])")
_SEPARATORS = re.compile(r"[\s.\-_*,/|]+")
_TRIPLES = re.compile(r"([a-z])\1{2,}")
_DOUBLE_VOWELS = re.compile(r"([aeiouy])\1+")
_BOUNDARY_L = r"(?<![a-z0-9])"
_BOUNDARY_R = r"(?![a-z0-9])"


# --- policy file schema ------------------------------------------------------------------------------


class _TermsFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    words: list[str] = Field(default_factory=list)
    regexes: list[str] = Field(default_factory=list)


class _RuleFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    when: list[list[str]] = Field(min_length=1)


class _PolicyFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    replace_defaults: bool = False
    disable_rules: list[str] = Field(default_factory=list)
    allow: list[str] = Field(default_factory=list)
    words: list[str] = Field(default_factory=list)
    regexes: list[str] = Field(default_factory=list)
    terms: dict[str, _TermsFile] = Field(default_factory=dict)
    rules: list[_RuleFile] = Field(default_factory=list)


def _read_policy_file(path: Path) -> _PolicyFile:
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(message=f"{path}: cannot read the block list file ({exc.strerror or exc})") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(message=f"{path}: invalid TOML: {exc}") from exc
    try:
        policy = _PolicyFile.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors())
        raise ConfigError(message=f"{path}: {problems}") from exc
    located = [("regexes", policy.regexes)] + [(f"terms.{name}.regexes", t.regexes) for name, t in policy.terms.items()]
    for key, regexes in located:
        for regex in regexes:
            try:
                re.compile(regex)
            except re.error as exc:
                raise ConfigError(message=f"{path}: {key}: invalid regex {regex!r}: {exc}") from exc
    return policy


# --- normalisation -----------------------------------------------------------------------------------


def _fold(text: str) -> str:
    """Case, accents, width, look-alike letters and invisible characters folded away."""
    decomposed = unicodedata.normalize("NFKD", text)
    kept = "".join(ch for ch in decomposed if unicodedata.category(ch) not in ("Mn", "Me", "Cf"))
    return " ".join(kept.casefold().translate(_CONFUSABLES).split())


def _leet(text: str) -> str:
    """Leet characters read as letters, only in tokens that also hold a letter ("12 yo" keeps its digits)."""

    def swap(match: re.Match[str]) -> str:
        token = match.group(0)
        return token.translate(_LEET) if re.search("[a-z]", token) else token

    return _LEET_TOKEN.sub(swap, text)


@dataclass(frozen=True)
class _Views:
    """The prompt as seen by the matchers: whole-word views, vowel-squeezed views, and spaced-out runs."""

    words: tuple[str, ...]
    squeezed: tuple[str, ...]
    runs: tuple[str, ...]


def _views(prompt: str, allow: re.Pattern[str] | None) -> _Views:
    base = _fold(prompt)
    leet = _leet(base)
    if allow is not None:
        base, leet = allow.sub(" ", base), allow.sub(" ", leet)
    words = {base, leet}
    for view in (base, leet):
        words.add(_TRIPLES.sub(r"\1", view))
        words.add(_TRIPLES.sub(r"\1\1", view))
    squeezed = {_DOUBLE_VOWELS.sub(r"\1", view) for view in words}
    joined = (_SEPARATORS.sub("", run.group(0)).translate(_LEET) for run in _SPACED_RUN.finditer(base))
    runs = {_TRIPLES.sub(r"\1", run) for run in joined}
    return _Views(tuple(words), tuple(squeezed - words), tuple(runs))


# --- compiled categories -----------------------------------------------------------------------------


def _term_pattern(term: str) -> str | None:
    """Regex body for one list entry: words joined by optional separators; plural or `*` ending."""
    wildcard = term.rstrip().endswith("*")
    parts = [p for p in re.split(r"[\s\-_.]+", _fold(term.rstrip().rstrip("*"))) if p]
    if not parts:
        return None
    body = r"[\s\-_.]*".join(re.escape(p) for p in parts)
    return body + (r"[a-z]*" if wildcard else r"(?:e?s)?")


def _alternation(patterns: Iterable[str], *, bounded: bool) -> re.Pattern[str] | None:
    bodies = sorted(set(patterns), key=len, reverse=True)
    if not bodies:
        return None
    joined = "|".join(bodies)
    return re.compile(f"{_BOUNDARY_L}(?:{joined}){_BOUNDARY_R}" if bounded else f"(?:{joined})")


@dataclass(frozen=True)
class _Category:
    words: re.Pattern[str] | None
    squeezable: re.Pattern[str] | None  # terms without doubled vowels, for the vowel-squeezed views
    substrings: re.Pattern[str] | None  # unbounded, only used inside spaced-out runs
    regexes: tuple[re.Pattern[str], ...]

    @classmethod
    def build(cls, words: Iterable[str], regexes: Iterable[str], *, source: str) -> _Category:
        patterns = {term: body for term in words if (body := _term_pattern(term))}
        squeezable = [body for term, body in patterns.items() if not _DOUBLE_VOWELS.search(_fold(term))]
        compiled = []
        for regex in regexes:
            try:
                compiled.append(re.compile(regex, re.IGNORECASE))
            except re.error as exc:
                raise ConfigError(message=f"{source}: invalid regex {regex!r}: {exc}") from exc
        return cls(
            words=_alternation(patterns.values(), bounded=True),
            squeezable=_alternation(squeezable, bounded=True),
            substrings=_alternation(patterns.values(), bounded=False),
            regexes=tuple(compiled),
        )

    def matches(self, views: _Views) -> bool:
        if self.words and any(self.words.search(v) for v in views.words):
            return True
        if self.squeezable and any(self.squeezable.search(v) for v in views.squeezed):
            return True
        if self.substrings and any(self.substrings.search(v) for v in views.runs):
            return True
        return any(regex.search(v) for regex in self.regexes for v in views.words)


@dataclass(frozen=True)
class _Rule:
    name: str
    when: tuple[tuple[str, ...], ...]
    source: str = "built-in"


@dataclass
class _Spec:
    """Merged lists before compilation: category → (words, regexes), plus the rules."""

    terms: dict[str, tuple[list[str], list[str]]] = field(default_factory=dict)
    rules: list[_Rule] = field(default_factory=list)
    allow: list[str] = field(default_factory=list)

    def merge(self, policy: _PolicyFile, source: Path) -> None:
        if policy.replace_defaults:
            self.terms.clear()
            self.rules.clear()
            self.allow.clear()
        self.allow.extend(policy.allow)
        disabled = set(policy.disable_rules)
        self.rules = [rule for rule in self.rules if rule.name not in disabled]
        self._add(_BLOCKED, policy.words, policy.regexes)
        for name, terms in policy.terms.items():
            self._add(name, terms.words, terms.regexes)
        known = {rule.name for rule in self.rules}
        for rule in policy.rules:
            if rule.name not in known:
                self.rules.append(_Rule(rule.name, tuple(tuple(group) for group in rule.when), str(source)))
                known.add(rule.name)

    def _add(self, name: str, words: Sequence[str], regexes: Sequence[str]) -> None:
        have_words, have_regexes = self.terms.setdefault(name, ([], []))
        have_words.extend(words)
        have_regexes.extend(regexes)


# --- the policy --------------------------------------------------------------------------------------


class PromptPolicy:
    """Decides whether a prompt may be generated. Build once with `from_settings`; `check` is cheap."""

    def __init__(
        self,
        categories: dict[str, _Category],
        rules: Sequence[_Rule],
        *,
        max_chars: int,
        allow: Sequence[str] = (),
    ) -> None:
        for rule in rules:
            unknown = sorted({c for group in rule.when for c in group} - categories.keys())
            if unknown:
                raise ConfigError(message=f"{rule.source}: rule {rule.name!r} uses unknown categories: {unknown}")
        self._categories = categories
        self._rules = [_Rule(_BLOCKED, ((_BLOCKED,),)), *rules] if _BLOCKED in categories else list(rules)
        self.max_chars = max_chars
        self._allow = _alternation(filter(None, map(_term_pattern, allow)), bounded=True)

    @classmethod
    def load(cls, *files: Path, defaults: bool = True, max_chars: int = 400) -> PromptPolicy:
        """Built-in defaults (unless `defaults=False`) merged with each operator file in order."""
        spec = _Spec()
        sources = ([DEFAULTS_FILE] if defaults else []) + list(files)
        for path in sources:
            spec.merge(_read_policy_file(path), path)
        categories = {
            name: _Category.build(words, regexes, source=f"prompt policy category {name!r}")
            for name, (words, regexes) in spec.terms.items()
        }
        return cls(categories, spec.rules, max_chars=max_chars, allow=spec.allow)

    @classmethod
    def from_settings(cls, settings: Settings) -> PromptPolicy:
        """Defaults + `settings.blocklist_file`, length limit `settings.max_prompt_chars`."""
        files = [settings.blocklist_file] if settings.blocklist_file else []
        return cls.load(*files, max_chars=settings.max_prompt_chars)

    @property
    def rule_names(self) -> list[str]:
        return [rule.name for rule in self._rules]

    def violation(self, prompt: str, *, extra_words: Sequence[str] = ()) -> str | None:
        """Name of the first rule the prompt breaks (`"community"` for a community word), or None."""
        views = _views(prompt, self._allow)
        hits: dict[str, bool] = {}

        def hit(category: str) -> bool:
            if category not in hits:
                hits[category] = self._categories[category].matches(views)
            return hits[category]

        for rule in self._rules:
            if all(any(hit(c) for c in group) for group in rule.when):
                return rule.name
        if extra_words and _extra_category(tuple(sorted(set(extra_words)))).matches(views):
            return "community"
        return None

    def check(self, prompt: str, *, extra_words: Sequence[str] = (), context: str = "") -> None:
        """Raise `PromptTooLong` or `PromptRefused(rule=...)`; the refusal text never repeats the prompt.

        `context` (a preset spec, the request an edit changes) is matched together with the prompt, so a rule
        that needs two terms sees both, but it does not count towards the prompt's length.
        """
        length = len(prompt.strip())
        if length > self.max_chars:
            raise PromptTooLong(length=length, limit=self.max_chars)
        rule = self.violation(f"{context}\n{prompt}" if context else prompt, extra_words=extra_words)
        if rule is not None:
            raise PromptRefused(rule=rule)

    def __repr__(self) -> str:
        return f"PromptPolicy(rules={self.rule_names}, max_chars={self.max_chars})"


@lru_cache(maxsize=256)
def _extra_category(words: tuple[str, ...]) -> _Category:
    """Per-community words, compiled once per distinct list."""
    return _Category.build(words, (), source="community block list")


async def screen_request(
    *,
    policy: PromptPolicy,
    abuse: AbuseLog,
    user_id: str | int,
    platform: str,
    chat_id: str | int | None,
    prompt: str,
    context: str = "",
    extra_words: Sequence[str] = (),
) -> None:
    """The bot core's gate before enqueueing: ban check, then prompt policy; refusals go to the audit log.

    Raises `Banned`, `PromptTooLong` or `PromptRefused`; returns None when the request may be enqueued
    (the caller then records the `request` event with the job id).
    """
    if await abuse.is_banned(user_id, platform):
        await abuse.record("refusal", user_id, platform, chat_id, detail=f"banned: {prompt}")
        raise Banned()
    try:
        policy.check(prompt, extra_words=extra_words, context=context)
    except (PromptRefused, PromptTooLong) as exc:
        reason = exc.data.get("rule") or exc.code
        await abuse.record("refusal", user_id, platform, chat_id, detail=f"{reason}: {prompt}")
        raise
