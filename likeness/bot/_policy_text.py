"""Prompt normalisation for the prompt policy: the forms and views of a prompt that the lists are matched against.

`plain(text)` is how every list entry and every prompt is compared:

1. NFKC: full-width letters, mathematical alphanumerics (`𝐧𝐮𝐝𝐞`), circled and parenthesised letters,
   superscripts, ligatures and half-width kana become plain characters.
2. Invisible characters go: format controls (zero-width spaces and joiners, bidi controls, tag characters,
   the soft hyphen), Hangul fillers, the Arabic tatweel, skin-tone modifiers; other controls and every kind
   of space become a plain space, every script's digits become 0–9 (`١٥` → `15`), curly apostrophes `'`.
3. Latin letters in disguise, read from their Unicode names: small capitals (`ɴᴜᴅᴇ`), negative squared and
   circled letters (`🅽🆄🅳🅴`), regional indicators (`🇳🇺🇩🇪`), letters with strokes (`ł`, `ø`), the dotless i.
4. Case folding; diacritics are dropped (`nüde`, `desnúda`, `ё` → `е`, Arabic hamza forms and short vowels)
   while the vowel signs of Devanagari and other Indic scripts and the kana voicing marks stay (they are
   letters there); spelling variants writers mix freely are unified (Arabic `ة`/`ه`, `ى`/`ي`; Devanagari
   candrabindu/anusvara).

`skeleton(text)` adds step 5 for the Latin lists: Unicode's confusables table (`confusable-homoglyphs`,
generated from UTS #39 `confusables.txt`) reads the remaining look-alike letters as the Latin letter they, or
their capitals, imitate (Cyrillic `с`, `е`, `х`, `н` → `c`, `e`, `x`, `h`; Greek `ο` → `o`; Armenian `ս` → `u`),
so `sеx` with a Cyrillic `е`, and `ЅЕХ` in Cyrillic capitals, read `sex`. Only letters map: digit look-alikes
(`б` → `6`) are left alone so ages stay intact.

Lists in other scripts are matched on the plain form, never on the skeleton: Russian text is compared as
Russian, so a Russian prompt is not refused because its letters happen to look Latin. A word mixing Cyrillic
with Latin look-alikes or digits (`гoлaя` with a Latin `o`, `г0лая`) is read as Cyrillic in a view of its own.

`Views` derives the evasion views: leetspeak inside words (`n00dz` → `noodz`), letters repeated three times
or more (`nuuuude`), doubled vowels (`naaked`), letters starred out (`p*rn`), single letters spaced apart by
any separators (`n~u~d~e`, `n+u+d+e`, `г о л а я`), words split in two or three (`nu de`, `top less`; never
across a small function word such as "is" or "an", so "a pen is" stays a pen), and runs of CJK characters
with spaces slipped in (`裸 体`).
"""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

__all__ = [
    "ALNUM",
    "INDIC",
    "LETTER",
    "NOT_LETTER",
    "Views",
    "fold_marks",
    "latin_reading",
    "load_tables",
    "plain",
    "skeleton",
    "views",
]

# Letters and digits of the scripts that separate words: a term never matches inside a word of these
# scripts. CJK and kana are left out on purpose ("性感bikini", "12岁sexy" are written without spaces).
ALNUM = (
    "0-9a-z\u00c0-\u024f\u0370-\u03ff\u0400-\u052f\u0531-\u0587\u0590-\u05ff"  # Latin, Greek, Cyrillic, Armenian…
    "\u0600-\u06ff\u0750-\u077f\u0900-\u097f\uac00-\ud7af"  # Arabic, Devanagari, Hangul
)

# Python's `\w` leaves out the combining vowel signs of Indic scripts (Devanagari's ी, ा, ं): count them in.
INDIC = "\u0900-\u0dff\u0e00-\u0eff\u1000-\u109f"
LETTER = f"(?:[^\\W_]|[{INDIC}])"  # a letter or digit of any script
NOT_LETTER = f"(?:[^\\w{INDIC}]|_)"  # a space, punctuation, a symbol

_LATIN_NAME = re.compile(
    r"(?:.* )?LATIN (?:CAPITAL |SMALL )?LETTER (?:SMALL CAPITAL )?([A-Z])(?: WITH .*)?"
    r"|REGIONAL INDICATOR SYMBOL LETTER ([A-Z])"
    r"|LATIN SMALL LETTER DOTLESS ([IJ])"
    r"|(?:.* )?DIGIT (ZERO|ONE|TWO|THREE|FOUR|FIVE|SIX|SEVEN|EIGHT|NINE)"
)
_DIGITS = ("ZERO", "ONE", "TWO", "THREE", "FOUR", "FIVE", "SIX", "SEVEN", "EIGHT", "NINE")
_DIGIT_NAMES = {name: str(i) for i, name in enumerate(_DIGITS)}
_APOSTROPHES = frozenset("\u2018\u2019\u201b\u02bc\u02b9\u0060\u00b4\u2032\uff07")
_DROP = frozenset([0x0640, 0x115F, 0x1160, 0x3164, 0xFFA0, *range(0x1F3FB, 0x1F400)])  # tatweel, fillers, skin tones
_KEEP_MARKS = ((0x0900, 0x0DFF), (0x0E00, 0x0EFF), (0x1000, 0x109F), (0x3099, 0x309A))  # INDIC and kana
_VARIANTS = str.maketrans({"ة": "ه", "ى": "ي", "ی": "ي", "ک": "ك", "ۀ": "ه", "\u0901": "\u0902"})
_MAX_CACHED = 50_000  # per table: a flood of rare code points costs time, never unbounded memory


class _Chars(dict[int, str | None]):
    """Steps 2 and 3 for one code point, computed on first sight and remembered (a `str.translate` table)."""

    def __missing__(self, cp: int) -> str | None:
        value = _fold_char(chr(cp))
        if len(self) < _MAX_CACHED:
            self[cp] = value
        return value


class _Marks(dict[int, str | None]):
    """Step 4 on decomposed text: the combining marks to drop."""

    def __missing__(self, cp: int) -> str | None:
        ch = chr(cp)
        drop = unicodedata.category(ch) in ("Mn", "Me") and not any(lo <= cp <= hi for lo, hi in _KEEP_MARKS)
        value = None if drop else ch
        if len(self) < _MAX_CACHED:
            self[cp] = value
        return value


def _fold_char(ch: str) -> str | None:
    category = unicodedata.category(ch)
    if category == "Cf" or ord(ch) in _DROP:
        return None
    if category in ("Cc", "Zs", "Zl", "Zp") or ch == "\u2800":
        return " "
    if category == "Nd":
        return str(unicodedata.decimal(ch))
    if ch in _APOSTROPHES:
        return "'"
    match = _LATIN_NAME.fullmatch(unicodedata.name(ch, ""))
    if match:
        letter = match.group(1) or match.group(2) or match.group(3)
        return letter.lower() if letter else _DIGIT_NAMES[match.group(4)]
    return ch


_ASCII_CONTROLS = str.maketrans(dict.fromkeys([*range(32), 127], " "))
_CHARS = _Chars()
_MARKS = _Marks()


@lru_cache(maxsize=1)
def _confusables() -> dict[int, str]:
    """Lower-case letters → the ASCII letter Unicode's confusables table says they (or their capitals) imitate.

    Applied after case folding, so `нот` and `НОТ` read alike (`hot`); about 1,500 entries.
    """
    data = json.loads(resources.files("confusable_homoglyphs").joinpath("confusables.json").read_text("utf-8"))
    own: dict[str, str] = {}
    for char, homoglyphs in data.items():
        if len(char) != 1 or char.isascii():
            continue
        letters = [h["c"] for h in homoglyphs if len(h["c"]) == 1 and h["c"].isascii() and h["c"].isalpha()]
        if letters:
            # Prefer the lower-case reading (`Ⅰ` imitates both `l` and `I`); the table's order breaks ties.
            own[char] = min(letters, key=lambda c: (not c.islower(), letters.index(c))).lower()
    table = {ord(char): letter for char, letter in own.items() if char.casefold() == char}
    for char, letter in own.items():
        folded = char.casefold()
        if len(folded) == 1 and not folded.isascii():
            table.setdefault(ord(folded), letter)  # `н` reads as its capital `Н` does: `h`
    return table


@lru_cache(maxsize=1)
def _cyrillic_reading() -> dict[int, str]:
    """ASCII letters and digits → the Cyrillic letter they stand in for, inside words that mix the two scripts."""
    data = json.loads(resources.files("confusable_homoglyphs").joinpath("confusables.json").read_text("utf-8"))
    reading: dict[int, str] = {}
    for cp in range(0x0430, 0x0460):  # а–я, ѐ–џ: Russian letters first, then the others
        char = chr(cp)
        for variant in (char, char.upper()):
            for glyph in data.get(variant, ()):
                target = glyph["c"]
                if len(target) == 1 and target.isascii() and target.isalnum():
                    reading.setdefault(ord(target.lower()), char)
    for digit, letter in zip("0134", "oiea", strict=True):  # leet digits inside a Cyrillic word: г0лая
        if ord(letter) in reading:
            reading.setdefault(ord(digit), reading[ord(letter)])
    return reading


def load_tables() -> None:
    """Read the confusables table now (~20 ms), so a broken install fails at start-up, not on a prompt."""
    _confusables()
    _cyrillic_reading()


def fold_marks(text: str) -> str:
    """Step 4 without case folding: for the lists' regexes, whose escapes (`\\S`, `\\W`) must keep their case."""
    text = unicodedata.normalize("NFC", unicodedata.normalize("NFD", text).translate(_MARKS))
    return text.translate(_VARIANTS)


def plain(text: str) -> str:
    """Steps 1–4 (see the module docstring): how words in scripts other than Latin are compared."""
    text = unicodedata.normalize("NFKC", text)
    if text.isascii():
        return text.translate(_ASCII_CONTROLS).casefold()
    text = text.translate(_CHARS).casefold()
    if not text.isascii():
        text = unicodedata.normalize("NFC", unicodedata.normalize("NFD", text).translate(_MARKS))
    return text if text.isascii() else text.translate(_VARIANTS)


def skeleton(text: str) -> str:
    """Steps 1–5 (see the module docstring): how Latin words are compared."""
    return latin_reading(plain(text))


def latin_reading(plain_text: str) -> str:
    """Step 5 on a `plain` form: look-alike letters read as the Latin letters they imitate."""
    return plain_text if plain_text.isascii() else plain_text.translate(_confusables())


# --- evasion views -----------------------------------------------------------------------------------

_LEET = str.maketrans("0134578@$!|€", "oieastbasile")
# A mixed token of letters and leet characters; symbols only count when a letter or digit follows them
# ("nude!" keeps its "!", "$ex" becomes "sex"). Tokens without a letter keep their digits ("12 yo"); the
# skeleton view beside the leet view keeps every digit anyway.
_LEET_TOKEN = re.compile(r"(?:[a-z0-9]|[@$!|€](?=[a-z0-9]))+")
_HAS_LETTER = re.compile("[a-z]")
# Single letters split by 1–3 separators of any kind: "n u d e", "n.u.d.e", "n~u~d~e", "г о л а я".
_RUN = re.compile(f"(?<!{LETTER})(?:{LETTER}{NOT_LETTER}{{1,3}}){{2,}}{LETTER}(?!{LETTER})")
_NOT_WORD = re.compile(f"{NOT_LETTER}+")
_EDGE_DIGITS = re.compile(r"^\d+|\d+$")
_STARRED = re.compile(r"(?<=[a-z])[*#]+(?=[a-z])")
# Words for the join view: apostrophes stay inside ("mike's ex" must not become "s"+"ex").
_TOKEN = re.compile(f"{LETTER}+(?:'{LETTER}+)*")
_TRIPLES = re.compile(r"([a-z])\1{2,}")
_DOUBLE_VOWELS = re.compile(r"([aeiouy])\1+")
_CYRILLIC = re.compile("[\u0400-\u052f]")
_LATIN_OR_DIGIT = re.compile("[a-z0-9]")
_MIXED_WORD = re.compile(f"{LETTER}+")
_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_CJK_GAP = re.compile(f"(?<=[{_CJK}])[\\W_]{{1,3}}(?=[{_CJK}])")
# Words never glued to a neighbour in the join view: "pen is", "an al", "as s" stay apart.
_STOP = frozenset(
    {"a", "an", "and", "are", "as", "at", "be", "but", "by", "do", "for", "from", "go", "he", "her", "him", "his"}
    | {"i", "if", "in", "is", "it", "its", "me", "my", "no", "not", "of", "off", "on", "or", "our", "she", "so"}
    | {"than", "that", "the", "them", "they", "this", "to", "up", "us", "was", "we", "who", "with", "you", "your"}
)
_MAX_JOIN = 24


@dataclass(frozen=True)
class Views:
    """One prompt as the matchers see it; each field holds several views joined by newlines (one search each).

    Latin family, from the skeleton: `latin_words` (the skeleton, its leet reading, repeated-letter folds;
    ASCII regexes run here), `latin_terms` (those plus letters spaced apart, words glued back together and
    letters starred out),
    `squeezed` (doubled vowels squeezed, for entries that have none: `naaked`). Other scripts, from the plain
    form, empty for an ASCII prompt: `other_words` (the plain form, and words that mix Cyrillic with Latin
    look-alikes or digits read as Cyrillic: `гoлaя`, `г0лая`; regexes with non-ASCII characters run here) and
    `other_terms` (those plus CJK without the spaces slipped in, spaced letters and split words).
    """

    latin_words: str
    latin_terms: str
    squeezed: str
    other_words: str = ""
    other_terms: str = ""


def views(latin: str, other: str | None = None) -> Views:
    """Views of a prompt from its (allow-list blanked) skeleton and plain form; `other` None for ASCII prompts."""
    leet = _LEET_TOKEN.sub(_leet_token, latin) if _has_leet(latin) else latin
    words = dict.fromkeys([latin, leet])
    for view in (latin, leet):
        if _TRIPLES.search(view):
            words[_TRIPLES.sub(r"\1", view)] = None
            words[_TRIPLES.sub(r"\1\1", view)] = None
    squeezed = dict.fromkeys(_DOUBLE_VOWELS.sub(r"\1", view) for view in words if _DOUBLE_VOWELS.search(view))
    latin_words = "\n".join(words)
    latin_terms = "\n".join([latin_words, *_runs(latin), *_joins(leet), *_uncensored(latin)])
    if other is None or other.isascii():
        return Views(latin_words, latin_terms, "\n".join(squeezed))
    others = dict.fromkeys([other])
    if _CYRILLIC.search(other) and _LATIN_OR_DIGIT.search(other):
        others[_MIXED_WORD.sub(_read_as_cyrillic, other)] = None
    other_words = "\n".join(others)
    evasions = [run for run in _runs(other) if not run.isascii()]
    evasions += [join for join in _joins(other) if not join.isascii()]
    if _CJK_GAP.search(other):
        evasions.append(_CJK_GAP.sub("", other))
    return Views(latin_words, latin_terms, "\n".join(squeezed), other_words, "\n".join([other_words, *evasions]))


def _runs(text: str) -> list[str]:
    """Single letters spaced apart, glued together ("n.u.d.e" → "nude", "n u u u d e" → "nude")."""
    candidates: dict[str, None] = {}
    for run in _RUN.finditer(text):
        joined = _NOT_WORD.sub("", run.group(0))
        for spelled in (joined, _EDGE_DIGITS.sub("", joined)):  # "0.5+n.u.d.e:0.5" in a fusion spec
            letters = spelled.translate(_LEET)
            candidates.update(dict.fromkeys([letters, _TRIPLES.sub(r"\1", letters)]))
    out = []
    for letters in filter(None, candidates):
        out.append(letters)
        if letters[0] in "ai":  # "make me a n u d e": the article runs into the word
            out.append(letters[1:])
    return out


def _uncensored(text: str) -> list[str]:
    """Letters starred out inside a word, read as each vowel in turn ("p*rn", "s*x", "b**bs")."""
    if not _STARRED.search(text):
        return []
    return [_STARRED.sub(lambda match, v=vowel: v * len(match.group(0)), text) for vowel in "aeiou"]  # type: ignore[misc]


def _read_as_cyrillic(match: re.Match[str]) -> str:
    word = match.group(0)
    return word.translate(_cyrillic_reading()) if _CYRILLIC.search(word) and _LATIN_OR_DIGIT.search(word) else word


def _has_leet(text: str) -> bool:
    return any(ch in text for ch in "0134578@$!|€")


def _leet_token(match: re.Match[str]) -> str:
    token = match.group(0)
    return token.translate(_LEET) if _HAS_LETTER.search(token) else token


def _joins(text: str) -> list[str]:
    """Two or three neighbouring words glued together ("nu de" → "nude"), skipping small function words."""
    tokens = [t.replace("'", "") for t in _TOKEN.findall(text)]
    usable = [t not in _STOP and not t.isdigit() for t in tokens]
    out = []
    for i in range(len(tokens) - 1):
        if not (usable[i] and usable[i + 1]):
            continue
        pair = tokens[i] + tokens[i + 1]
        if len(pair) <= _MAX_JOIN:
            out.append(pair)
        if i + 2 < len(tokens) and usable[i + 2] and len(pair) + len(tokens[i + 2]) <= _MAX_JOIN:
            out.append(pair + tokens[i + 2])
    return out
