"""Compiling the prompt policy's word lists: one regular expression per category, shaped as a character trie.

A list entry is normalised like a prompt (`_policy_text.plain`), split into words at spaces and punctuation
(symbols such as emoji stay part of a word), and inserted into a trie, so a category of several hundred
entries in sixteen languages costs one pass over the prompt instead of one per entry. Entries that are ASCII
once normalised (English, German, Turkish, Polish, … and Hinglish) are matched against the prompt's
skeleton views, where look-alike letters read as Latin; the others (Cyrillic, Arabic, Devanagari, CJK,
Hangul) against its plain views, as typed. Where an entry may match depends on the script at its edges:

- letters of scripts that separate words (Latin, Cyrillic, Greek, Arabic, Devanagari, Hangul) may not touch
  the entry's first or last letter: whole words only, so "sex" never matches "Sussex". Arabic entries also
  match after the clitics و ف ب ل ك and the article ال (`والعارية`); Hangul entries are open to the right,
  where Korean attaches its particles (`누드를`);
- katakana entries are bounded by katakana (`ヌード` is not in `ヌードル`, noodles);
- Han and hiragana entries match anywhere (Chinese and Japanese put no spaces between words): list
  compounds that are innocent in `allow` (`裸足`, barefoot);
- the words of a multi-word entry may be separated by up to three spaces or punctuation marks, or by
  nothing (`deep fake` matches "deepfake", `high school girl` matches "highschool_girl");
- an ASCII entry also matches its plural (`-s`, `-es`); a trailing `*` matches any ending (`pornograph*`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from likeness.bot._policy_text import ALNUM, INDIC, Views, fold_marks, plain

__all__ = ["Category", "term_patterns"]

_WORD_BREAK = re.compile(f"(?:[^\\w{INDIC}\U0001f000-\U0001faff\u2600-\u27bf]|_)+")
_ALNUM_CHAR = re.compile(f"[{ALNUM}]")
_KATAKANA = "\u30a0-\u30ff\u31f0-\u31ff"
_HANGUL = re.compile("[\uac00-\ud7af]")
_ARABIC = re.compile("[\u0600-\u06ff\u0750-\u077f]")
_SEP = "\x00"
_SEP_RE = f"(?:[^\\w{INDIC}\\n]|_){{0,3}}"
_CLITICS = "وفبلك"  # Arabic "and", "so", "with", "for", "like", written joined to the next word


def _edge(ch: str) -> str:
    if _ALNUM_CHAR.match(ch):
        return "arabic" if _ARABIC.match(ch) else "hangul" if _HANGUL.match(ch) else "word"
    if "\u30a0" <= ch <= "\u30ff" or "\u31f0" <= ch <= "\u31ff":
        return "kana"
    return "open"


_LEFT = {
    "word": f"(?<![{ALNUM}])",
    "hangul": f"(?<![{ALNUM}])",
    "arabic": f"(?<![{ALNUM}])(?:[{_CLITICS}]?ال|[{_CLITICS}]|لل)?",
    "kana": f"(?<![{_KATAKANA}])",
    "open": "",
}
_RIGHT = {
    "word": f"(?![{ALNUM}])",
    "arabic": f"(?![{ALNUM}])",
    "hangul": "",
    "kana": f"(?![{_KATAKANA}])",
    "open": "",
}


def _words(term: str) -> tuple[list[str], bool]:
    raw = term.strip()
    wildcard = raw.endswith("*")
    return [w for w in _WORD_BREAK.split(plain(raw.rstrip("*"))) if w], wildcard


def _suffix(wildcard: bool, ascii_only: bool, last: str) -> str:
    if ascii_only:
        # A plural: "-s", "-es"; an entry that already ends in "s" only takes "-es" ("bras" + "s" is "brass").
        return "[a-z]*" if wildcard else "(?:es)?" if last == "s" else "(?:e?s)?"
    return r"[^\W\d_]*" if wildcard and _edge(last) != "hangul" else ""


def term_patterns(terms: Iterable[str]) -> tuple[str | None, str | None]:
    """Regex bodies for `terms` (see the module docstring): (ASCII entries, entries in other scripts).

    ASCII entries are matched against the prompt's skeleton, the others against its plain form. Entries are
    grouped by the kind of boundary at each edge, so each boundary's character class is compiled once.
    """
    families: tuple[dict[tuple[str, str], _Node], ...] = ({}, {})
    for term in terms:
        words, wildcard = _words(term)
        if not words:
            continue
        text = _SEP.join(words)
        edges = (_edge(text[0]), _edge(text[-1]))
        node = families[0 if text.isascii() else 1].setdefault(edges, _Node())
        for ch in text:
            node = node.children.setdefault(ch, _Node())
        node.endings.add(_suffix(wildcard, text.isascii(), text[-1]))
    latin, other = (_family_regex(family) for family in families)
    return latin, other


@dataclass
class _Node:
    """A trie node: the next characters, and the regex pieces that end an entry here (suffix, plural)."""

    children: dict[str, _Node] = field(default_factory=dict)
    endings: set[str] = field(default_factory=set)

    def regex(self) -> str:
        alternatives = [
            (_SEP_RE if key == _SEP else re.escape(key)) + child.regex() for key, child in sorted(self.children.items())
        ]
        alternatives += sorted(self.endings)
        return alternatives[0] if len(alternatives) == 1 else "(?:" + "|".join(alternatives) + ")"


def _family_regex(family: dict[tuple[str, str], _Node]) -> str | None:
    if not family:
        return None
    groups = "|".join(f"{_LEFT[left]}{trie.regex()}{_RIGHT[right]}" for (left, right), trie in sorted(family.items()))
    # One character-class test first: most positions of a prompt start no entry, and `re` tries the
    # alternatives of a branch one by one (hundreds of CJK first characters) where a class is one lookup.
    firsts = {key for trie in family.values() for key in trie.children}
    if any(left == "arabic" for left, _ in family):
        firsts |= set(_CLITICS)
    return f"(?=[{''.join(re.escape(ch) for ch in sorted(firsts))}])(?:{groups})"


def _compile(body: str | None) -> re.Pattern[str] | None:
    return re.compile(body) if body else None


def _compile_regexes(regexes: list[str]) -> tuple[re.Pattern[str], ...]:
    """Regexes, case-insensitive; one alternation for those that combine safely (no backreferences, flags).

    Prompts are case-folded before matching, so a regex without capital letters needs no IGNORECASE (which
    would keep `re` from skipping ahead to its first letter).
    """
    if not regexes:
        return ()
    alone = [r for r in regexes if re.search(r"\\[1-9]|\(\?P=|\(\?[a-zA-Z]+\)", r)]
    combined = [r for r in regexes if r not in alone]
    sources = [*alone, "|".join(f"(?:{r})" for r in combined)] if combined else alone
    return tuple(re.compile(source, _flags(source)) for source in sources)


def _flags(source: str) -> int:
    literal = re.sub(r"\\.|\(\?P?<[^>]*>|\{[^}]*\}", "", source)  # escapes, group names, repetition counts
    return re.IGNORECASE if any(ch.isupper() for ch in literal) else 0


_DOUBLE_VOWELS = re.compile(r"([aeiouy])\1")


@dataclass(frozen=True)
class Category:
    """One word category (`explicit`, `minor`, …) compiled for matching against a prompt's `Views`."""

    latin: re.Pattern[str] | None  # ASCII entries, on the skeleton views
    squeezable: re.Pattern[str] | None  # ASCII entries without doubled vowels, on the vowel-squeezed views
    other: re.Pattern[str] | None  # entries in other scripts, on the plain views
    latin_regexes: tuple[re.Pattern[str], ...]  # regexes written in ASCII
    other_regexes: tuple[re.Pattern[str], ...]  # regexes with other characters (diacritics folded like a prompt)

    @classmethod
    def build(cls, words: Iterable[str], regexes: Iterable[str]) -> Category:
        """Compile a category; an invalid regex raises `re.error` (callers name the file)."""
        words = list(words)
        latin, other = term_patterns(words)
        squeezable, _ = term_patterns(w for w in words if plain(w).isascii() and not _DOUBLE_VOWELS.search(plain(w)))
        regexes = list(regexes)
        return cls(
            latin=_compile(latin),
            squeezable=_compile(squeezable),
            other=_compile(other),
            latin_regexes=_compile_regexes([r for r in regexes if r.isascii()]),
            other_regexes=_compile_regexes([fold_marks(r) for r in regexes if not r.isascii()]),
        )

    def matches(self, views: Views) -> bool:
        if self.latin is not None and self.latin.search(views.latin_terms):
            return True
        if self.squeezable is not None and views.squeezed and self.squeezable.search(views.squeezed):
            return True
        if self.other is not None and views.other_terms and self.other.search(views.other_terms):
            return True
        if any(regex.search(views.latin_words) for regex in self.latin_regexes):
            return True
        return bool(views.other_words) and any(regex.search(views.other_words) for regex in self.other_regexes)

    def blank(self, latin: str, other: str) -> tuple[str, str]:
        """Both forms of a prompt with every entry replaced by a space (how `allow` phrases are taken out)."""
        if self.latin is not None:
            latin = self.latin.sub(" ", latin)
        if self.other is not None and not other.isascii():
            other = self.other.sub(" ", other)
        return latin, other
