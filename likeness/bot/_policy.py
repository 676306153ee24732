"""Prompt policy: block lists and combination rules, checked in the bot core before anything is enqueued.

The lists are data: built-in defaults in `policy_defaults.toml` (rules, English and language-independent
lists) and `policy_languages/*.toml` (de, fr, es, it, pt, nl, pl, ru, uk, tr, ar, hi, ja, ko, zh), extended
(or replaced) by the operator's `settings.blocklist_file` and by per-community `extra_blocked_words`. A prompt
is refused when any rule matches; a rule is a list of groups of word categories and matches when every group
has a hit (`[["explicit", "suggestive"], ["minor"]]` = a sexual term together with a minor term). Rules are
tried in order, so the hard rule `sexualised-minor` comes first and names such prompts in the audit log.

Every text is normalised before matching (`_policy_text`: NFKC, invisible characters, disguised Latin
letters, diacritics, Unicode confusables, case) and seen through evasion views (leetspeak, repeated letters,
letters spaced apart, words split in two); entries match whole words in scripts that separate words and
anywhere in Chinese and Japanese (`_policy_terms`). Refusals never echo the words. See docs/prompt-policy.md.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from likeness.bot._policy_terms import Category
from likeness.bot._policy_text import latin_reading, load_tables, plain, views
from likeness.config import Settings
from likeness.errors import Banned, ConfigError, PromptRefused

if TYPE_CHECKING:
    from likeness.queue import AbuseLog

__all__ = ["DEFAULTS_FILE", "LANGUAGE_FILES", "PromptPolicy", "screen_request"]

DEFAULTS_FILE = Path(__file__).with_name("policy_defaults.toml")
LANGUAGE_FILES = tuple(sorted(Path(__file__).with_name("policy_languages").glob("*.toml")))

_BLOCKED = "blocked"  # the category (and rule) of the plain `words` / `regexes` lists
# Cannot be switched off with `disable_rules`: only `replace_defaults = true` drops it (with everything else).
_HARD_RULE = "sexualised-minor"


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


# --- merged lists ----------------------------------------------------------------------------------


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
        if _HARD_RULE in disabled and any(rule.name == _HARD_RULE for rule in self.rules):
            raise ConfigError(
                message=f"{source}: disable_rules: {_HARD_RULE!r} cannot be disabled (only replace_defaults = true "
                "drops it, together with every other built-in list and rule)"
            )
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
        categories: dict[str, Category],
        rules: Sequence[_Rule],
        *,
        allow: Sequence[str] = (),
    ) -> None:
        for rule in rules:
            unknown = sorted({c for group in rule.when for c in group} - categories.keys())
            if unknown:
                raise ConfigError(message=f"{rule.source}: rule {rule.name!r} uses unknown categories: {unknown}")
        self._categories = categories
        # The plain lists form the rule `blocked`, first unless the lists place a rule of that name themselves.
        implicit = _BLOCKED in categories and not any(rule.name == _BLOCKED for rule in rules)
        self._rules = [_Rule(_BLOCKED, ((_BLOCKED,),)), *rules] if implicit else list(rules)
        self._allow = Category.build(allow, ()) if allow else None
        load_tables()

    @classmethod
    def load(cls, *files: Path, defaults: bool = True) -> PromptPolicy:
        """Built-in defaults and language lists (unless `defaults=False`) merged with each operator file in order."""
        spec = _Spec()
        sources = ([DEFAULTS_FILE, *LANGUAGE_FILES] if defaults else []) + list(files)
        for path in sources:
            spec.merge(_read_policy_file(path), path)
        categories = {name: _build(name, words, regexes) for name, (words, regexes) in spec.terms.items()}
        return cls(categories, spec.rules, allow=spec.allow)

    @classmethod
    def from_settings(cls, settings: Settings) -> PromptPolicy:
        """Defaults + `settings.blocklist_file`."""
        files = [settings.blocklist_file] if settings.blocklist_file else []
        return cls.load(*files)

    @property
    def rule_names(self) -> list[str]:
        return [rule.name for rule in self._rules]

    def violation(self, prompt: str, *, extra_words: Sequence[str] = ()) -> str | None:
        """Name of the first rule the prompt breaks (`"community"` for a community word), or None."""
        other = plain(prompt)
        latin = latin_reading(other)
        if self._allow is not None:
            latin, other = self._allow.blank(latin, other)
        seen = views(latin, None if other.isascii() else other)
        hits: dict[str, bool] = {}

        def hit(category: str) -> bool:
            if category not in hits:
                hits[category] = self._categories[category].matches(seen)
            return hits[category]

        for rule in self._rules:
            if all(any(hit(c) for c in group) for group in rule.when):
                return rule.name
        if extra_words and _extra_category(tuple(sorted(set(extra_words)))).matches(seen):
            return "community"
        return None

    def check(self, prompt: str, *, extra_words: Sequence[str] = (), context: str = "") -> None:
        """Raise `PromptRefused(rule=...)`; the refusal text never repeats the prompt.

        `context` (a preset spec, the request an edit changes) is matched together with the prompt, so a rule
        that needs two terms sees both. Lengths are `likeness.requests`' to check, before this runs: the
        matchers' cost is bounded by them (≤ 2 ms for 400 characters, benchmarks/policy.py).
        """
        rule = self.violation(f"{context}\n{prompt}" if context else prompt, extra_words=extra_words)
        if rule is not None:
            raise PromptRefused(rule=rule)

    def __repr__(self) -> str:
        return f"PromptPolicy(rules={self.rule_names})"


def _build(name: str, words: Sequence[str], regexes: Sequence[str]) -> Category:
    try:
        return Category.build(words, regexes)
    except re.error as exc:
        raise ConfigError(message=f"prompt policy category {name!r}: invalid regex: {exc}") from exc


@lru_cache(maxsize=256)
def _extra_category(words: tuple[str, ...]) -> Category:
    """Per-community words, compiled once per distinct list."""
    return Category.build(words, ())


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

    `prompt` is any text of the user's that reaches the model: a portrait prompt, an edit instruction, a
    preset spec (`ghibli:0.7+headshot:0.3`). Every refusal is recorded with its rule, so a moderator finds
    the hard rule's refusals under `sexualised-minor`.

    Raises `Banned` or `PromptRefused`; returns None when the request may be enqueued
    (the caller then records the `request` event with the job id).
    """
    if await abuse.is_banned(user_id, platform):
        await abuse.record("refusal", user_id, platform, chat_id, detail=f"banned: {prompt}")
        raise Banned()
    try:
        policy.check(prompt, extra_words=extra_words, context=context)
    except PromptRefused as exc:
        reason = exc.data.get("rule") or exc.code
        await abuse.record("refusal", user_id, platform, chat_id, detail=f"{reason}: {prompt}")
        raise
