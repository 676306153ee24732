"""Edit instructions in plain words → what to change (a region) and into what (a prompt).

Torch-free: the bot core parses a reply once, before enqueueing (a bad instruction gets an answer at once);
the parsed `EditInstruction` travels in the job (`EditSpec`) and the worker runs it as is.

Recognised shapes (case, punctuation, emoji and politeness such as "please" are ignored):

=============================  ==============================================================
shape                          example
=============================  ==============================================================
``X: Y`` (also ``X -> Y``)     "hair: pink bob", "background: Paris at night", "lighting: studio"
``make the X Y``               "make the hair blue", "make my shirt red"
``make it Y`` / ``make me Y``  "make it black and white", "turn me into a zombie", "more contrast" (global)
``change / turn / switch``     "change the shirt to a tuxedo", "turn the sky into a sunset"
``replace / swap X with Y``    "replace the jacket with a hoodie"
``give me Y``                  "give me blue hair", "give me a beard"
``add Y [to the X]``           "add sunglasses", "add stars to the sky"
``remove Y``                   "remove the glasses", "remove the background"
``put me in Y`` / ``in Y``     "put me on a beach", "in Tokyo at night" (background; "in a tuxedo": clothes)
``Y background``, bare words   "cyberpunk city background", "blue hair", "golden hour"
=============================  ==============================================================

Regions (`REGIONS`; the word the user wrote is also sent to the segmenter when it names a specific
garment, e.g. "shirt"):

- hair — hair, hairstyle, haircut, bangs, fringe, ponytail, braids, curls …
- background — background, backdrop, bg, scenery, setting, surroundings … (inverted: *not* the person)
- sky — sky, clouds
- clothes — clothes, outfit, shirt, jacket, coat, dress, suit, hoodie, sweater, tuxedo …
- eyes — eyes, eye colour, iris;  lips — lips, lipstick, mouth;  beard — beard, moustache, stubble
- face — face, skin, freckles, makeup, tan (gentle strength: the face is the likeness)
- face_accessories — *added* where they go: glasses/sunglasses → the eyes; hat/cap/crown → the hair
  (top of the head); earrings → the ears; necklace/scarf/tie → the neck; face mask → the mouth.
  *Removed* by segmenting the item itself.

Global looks (`kind="global"`, low-strength img2img of the whole picture): "lighting: …", "… lighting",
"make it …", and looks such as black and white, sepia, vintage, film, cinematic, golden hour, neon.

Anything else naming a thing ("make the car red") falls back to a text-prompted mask of that noun phrase;
text with no recognisable shape raises `BadInstruction` with examples. Removing clothes is refused.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from typing import Literal, NoReturn

from likeness.errors import BadInstruction, echo

__all__ = [
    "EXAMPLES",
    "REGIONS",
    "EditInstruction",
    "Region",
    "parse_instruction",
]

EXAMPLES = (
    "make the hair blue",
    "background: Paris at night",
    "change the shirt to a tuxedo",
    "add sunglasses",
    "lighting: golden hour",
    "make it black and white",
)

MAX_INSTRUCTION_CHARS = 400


@dataclass(frozen=True)
class EditInstruction:
    """A parsed edit: where (region + segmentation queries) and what (prompt), with strength hints.

    `strength` is the denoising strength the edit should use; `grow` is how far the mask is dilated, as a
    fraction of the image's short side. `invert` means the region is everything *except* the queries
    (background = not the person). For `kind="global"` the whole image is redrawn at low strength.
    """

    text: str
    kind: Literal["inpaint", "global"]
    region: str
    prompt: str
    queries: tuple[str, ...] = ()
    invert: bool = False
    negative: str = ""
    action: Literal["change", "add", "remove", "look"] = "change"
    strength: float = 0.95
    grow: float = 0.02

    def describe(self) -> str:
        """Short human summary, e.g. `hair → blue hair` or `whole image → golden hour lighting`."""
        where = "whole image" if self.kind == "global" else self.region.replace("_", " ")
        if self.action == "remove":
            return f"{where}: remove {self.negative}"
        return f"{where} → {self.prompt}"


@dataclass(frozen=True)
class Region:
    """A named region: the words that name it, what the segmenter looks for, and how prompts are phrased."""

    name: str
    words: tuple[str, ...]
    queries: tuple[str, ...]
    template: str = "{target}"
    strength: float = 0.95
    grow: float = 0.02
    invert: bool = False
    # The segmenter also gets the user's own word (e.g. "shirt") when it is one of these.
    specific: tuple[str, ...] = field(default=())
    # What fills the area when the thing is removed ("" = removal is refused for this region).
    bare: str = "clean natural surface, seamless"


def _w(words: str) -> tuple[str, ...]:
    """Comma-separated word list → tuple (keeps the tables below readable)."""
    return tuple(w.strip() for w in words.split(",") if w.strip())


_GARMENTS = _w(
    "shirt, t-shirt, tshirt, t shirt, top, jacket, coat, dress, suit, sweater, hoodie, blouse, jumper, tuxedo, "
    "blazer, vest, cardigan, tank top, polo, kimono, gown, robe, armor, armour, uniform, costume, sweatshirt, "
    "overalls, trench coat, leather jacket"
)

REGIONS: tuple[Region, ...] = (
    Region(
        "hair",
        _w(
            "hair, hairstyle, hair style, haircut, hair cut, hairdo, hair color, hair colour, bangs, fringe, ponytail, "
            "braids, curls, locks, mane"
        ),
        ("hair",),
        template="{target} hair",
        strength=0.9,
        bare="bald head",
    ),
    Region(
        "background",
        _w(
            "background, backdrop, back ground, bg, scenery, scene, setting, surroundings, environment, location, "
            "behind me"
        ),
        ("person",),
        template="{target} background",
        strength=1.0,
        grow=0.01,
        invert=True,
        bare="plain white studio background",
    ),
    Region("sky", ("sky", "skies", "clouds"), ("sky",), template="{target} sky", strength=1.0, grow=0.01),
    Region(
        "clothes",
        ("clothes", "clothing", "outfit", "attire", "garment", "garments", "wardrobe", *_GARMENTS),
        ("clothes",),
        template="wearing {target} {word}",
        specific=_GARMENTS,
        bare="",
    ),
    Region(
        "eyes",
        ("eyes", "eye", "eye color", "eye colour", "iris", "irises", "pupils"),
        ("eyes",),
        template="{target} eyes",
        strength=0.75,
        grow=0.01,
    ),
    Region(
        "face",
        _w("face, skin, complexion, cheeks, freckles, makeup, make-up, tan, blush, wrinkles"),
        ("face",),
        template="{target} face",
        strength=0.6,  # the face is the likeness: change it gently
        grow=0.01,
        bare="natural skin",
    ),
    Region("lips", ("lips", "lipstick", "mouth"), ("lips",), template="{target} lips", strength=0.75, grow=0.01),
    Region(
        "beard",
        ("beard", "mustache", "moustache", "goatee", "stubble", "facial hair", "sideburns"),
        ("beard", "chin"),
        template="{target} beard",
        strength=0.9,
        bare="clean-shaven face",
    ),
)

# Accessories are added where they would sit: (item words, where to segment, what is left when removed).
_ACCESSORIES: tuple[tuple[tuple[str, ...], tuple[str, ...], str], ...] = (
    (_w("sunglasses, glasses, eyeglasses, spectacles, shades, goggles, monocle, eyepatch"), ("eyes",), "natural eyes"),
    (
        _w(
            "cowboy hat, top hat, flower crown, hat, cap, beanie, crown, helmet, headband, tiara, beret, fedora, "
            "bandana, headphones, halo, horns, hair bow, turban"
        ),
        ("hair",),
        "natural hair",
    ),
    (_w("earrings, earring, earbuds"), ("ears",), "natural ears"),
    (_w("necklace, chain, scarf, bow tie, bowtie, tie, choker, pendant, medal"), ("neck",), "bare neck"),
    (_w("face mask, mask, cigar, pipe"), ("mouth",), "natural face"),
)
_ACCESSORY = Region("face_accessories", (), (), template="wearing {target}", strength=1.0, grow=0.04)

# Global looks: word → (prompt, strength). Lighting words become "<word> lighting".
_LOOKS: dict[str, tuple[str, float]] = {
    **dict.fromkeys(
        ("black and white", "black & white", "b&w", "b & w", "bw", "monochrome", "grayscale", "greyscale", "noir"),
        ("black and white photograph, monochrome", 0.5),
    ),
    "sepia": ("sepia toned photograph", 0.45),
    **dict.fromkeys(
        ("vintage", "retro", "old photo", "old-school", "film", "analog", "analogue", "polaroid", "70s", "80s", "90s"),
        ("vintage film photograph, film grain, faded colors", 0.45),
    ),
    **dict.fromkeys(("cinematic", "movie", "film still"), ("cinematic still, color graded, dramatic light", 0.4)),
    **dict.fromkeys(
        ("pastel", "hdr", "vibrant", "saturated", "muted", "desaturated", "colorful", "colourful"),
        ("{word} colors", 0.4),
    ),
    **dict.fromkeys(
        _w(
            "golden hour, sunset, sunrise, studio, neon, candlelight, candle light, moonlight, dramatic, soft, rim, "
            "backlit, backlight, natural, daylight, night, moody, warm, warmer, cool, cooler, cold, bright, brighter, "
            "dark, darker, high contrast, low key, high key, rembrandt, volumetric, foggy, misty, rainy, snowy, "
            "winter, autumn, summer"
        ),
        ("{word} lighting", 0.35),
    ),
}
_GLOBAL_HEADS = _w(
    "lighting, light, lights, look, style, filter, mood, vibe, vibes, tone, tones, colors, colours, color grade, "
    "colour grade, grade, grading, effect, atmosphere, aesthetic, whole image, image, photo, picture, pic, "
    "everything, overall"
)
_WHOLE = ("it", "this", "that", "the image", "the photo", "the picture", "the pic", "everything", "the whole thing")
# Words that start the "Y" of "make the X Y" when X is an unknown noun phrase ("make the coffee cup bright red").
_MODIFIERS = frozenset(
    _w(
        "red, orange, yellow, green, blue, purple, violet, pink, black, white, grey, gray, brown, blonde, blond, "
        "silver, gold, golden, teal, cyan, magenta, turquoise, navy, beige, platinum, rainbow, neon, pastel, dark, "
        "light, bright, pale, deep, a, an, bigger, smaller, longer, shorter, larger, curly, straight, wavy, spiky, "
        "messy, shiny, glowing, transparent, striped, leather, denim, metallic, wooden, furry, fluffy, sparkly, "
        "colorful, colourful"
    )
)
_DETERMINERS = ("the", "a", "an", "my", "his", "her", "their", "your", "our", "its", "this", "that", "some", "me")
_REMOVE = re.compile(r"(?:remove|erase|delete|take off|take away|get rid of|lose|no|without) (.+)")
_ADD_WHERE = re.compile(r"(?:add|put|place|wear|include) (.+?) (?:to|on|in|onto|into|at) (.+)")
_PUT_ME = re.compile(
    r"(?:put|place|take|send|move|teleport|bring) (?:me|us|him|her|them) "
    r"(?:in|on|at|to|into|inside|onto|under|near) (.+)"
)
_PRONOUNS = ("me", "us", "him", "her", "them", "myself", "himself", "herself")
_MORE = re.compile(r"(?:add )?((?:more|less|increase|decrease|boost|reduce|lower|raise) .+)")
_BLUR = ("blur", "blurry", "blurred", "bokeh", "out of focus", "defocused")
_ADD = re.compile(r"(?:add|wear|include) (.+)")
_GIVE = re.compile(r"(?:give|get|put) (?:me|him|her|them|us|it) (.+)")
_CHANGE = re.compile(
    r"(?:change|turn|switch|convert|transform|swap|replace|set|dye|paint|colou?r) (.+?) (?:to|into|with|for|as) (.+)"
)
_MAKE = re.compile(r"(?:make|turn|dye|paint|colou?r|change|render) (.+)")
_PLACE = re.compile(r"(?:in|at|on|inside|under|near|by) (.+)")
_LOOK_TAIL = re.compile(r"(.+?) (?:lighting|light|lights|look|filter|vibe|vibes|style|effect|aesthetic)")
_POLITE_HEAD = re.compile(
    r"^(?:please|pls|plz|kindly|hey|hi|ok|okay|bot|now|also|and|just|"
    r"can you|could you|would you|will you|can u|could u|"
    r"i want(?: to)?|i'd like(?: to)?|id like(?: to)?|i would like(?: to)?|i wanna|let's|lets)\b[\s,]*"
)
_POLITE_TAIL = re.compile(r"[\s,]*\b(?:please|pls|plz|thanks|thank you|thx|for me|instead)$")


def parse_instruction(text: str, *, has_mask: bool = False, max_chars: int = MAX_INSTRUCTION_CHARS) -> EditInstruction:
    """Parse a user's edit instruction; raise `BadInstruction` (with examples) when it cannot be understood.

    With `has_mask=True` the user sent their own mask (white = change): any non-empty text is the prompt for
    that area, and the region is `"mask"`.
    """
    if not isinstance(text, str):
        raise BadInstruction(message=_help("Tell me what to change."))
    raw = text.strip()
    if len(raw) > max_chars:
        raise BadInstruction(
            message=f"That instruction is {len(raw)} characters long; please keep it under {max_chars}."
        )
    clean = _normalise(raw)
    if not clean:
        what = "what to put in the white area of your mask" if has_mask else "what to change"
        raise BadInstruction(message=_help(f"Tell me {what}."))
    try:
        parsed = _parse(clean, raw)
    except BadInstruction:
        if not has_mask:
            raise
        return EditInstruction(text=raw, kind="inpaint", region="mask", prompt=clean, strength=1.0, grow=0.0)
    if has_mask:
        target = parsed.negative if parsed.action == "remove" else parsed.prompt
        prompt = "clean natural surface, seamless" if parsed.action == "remove" else target
        return EditInstruction(
            text=raw,
            kind="inpaint",
            region="mask",
            prompt=prompt,
            negative=parsed.negative,
            action=parsed.action if parsed.action != "look" else "change",
            strength=1.0,
            grow=0.0,
        )
    return parsed


# --- parsing ----------------------------------------------------------------------------------------


def _parse(s: str, raw: str) -> EditInstruction:
    # 1. "X: Y"
    if ":" in s:
        head, _, tail = (part.strip() for part in s.partition(":"))
        if head in ("add", "remove", "put", "change", "make"):
            return _parse(f"{head} {tail}".strip(), raw)
        if not head:
            return _parse(tail, raw) if tail else _fail(raw)
        if not tail:
            shown = echo(head)
            raise BadInstruction(message=_help(f"What should the {shown} become? For example “{shown}: …”."))
        if _strip_det(head) in _GLOBAL_HEADS:
            return _global(raw, tail, lighting=_strip_det(head).startswith("light"))
        return _change(raw, head, tail)

    # 2. verb shapes
    if m := _REMOVE.fullmatch(s):
        return _remove(raw, m[1])
    if m := _MORE.fullmatch(s):
        return _global(raw, m[1])
    if (m := _ADD_WHERE.fullmatch(s)) and m[1] not in _PRONOUNS:
        return _add(raw, m[1], where=None if m[2] in _PRONOUNS else m[2])
    if m := _PUT_ME.fullmatch(s):
        return _wear_or_place(raw, m[1])
    if m := _ADD.fullmatch(s):
        return _add(raw, m[1])
    if m := _GIVE.fullmatch(s):
        return _bare(raw, m[1], add=True)
    if m := _CHANGE.fullmatch(s):
        return _change(raw, m[1], m[2])
    if m := _MAKE.fullmatch(s):
        return _make(raw, m[1])

    # 3. bare phrases
    if m := _PLACE.fullmatch(s):
        return _global(raw, m[1]) if _look(m[1]) == _strip_det(m[1]) else _wear_or_place(raw, m[1])
    return _bare(raw, s)


def _make(raw: str, rest: str) -> EditInstruction:
    """`make the X Y`, `make it Y`, `make me look Y`."""
    for whole in sorted(_WHOLE, key=len, reverse=True):
        if rest.startswith(whole + " "):
            look = re.sub(r"^(?:look|seem|be|into|a|an) ", "", rest[len(whole) + 1 :].strip())
            return _global(raw, look)
    if m := re.fullmatch(r"(?:me|us|him|her|them) (?:look )?(.+)", rest):
        return _global(raw, m[1])
    body = _strip_det(rest)
    if " " not in body:
        return _bare(raw, body)
    found = _find_region_prefix(body)
    if found is not None:
        word, region = found
        target = body[len(word) :].strip()
        if not target:
            return _fail(raw)
        if region is None:
            return _global(raw, target, lighting=word.startswith("light"))
        return _region_edit(raw, region, word, f"{target} {word}" if region.name != "background" else target)
    # Unknown thing: split before the first modifier word ("the coffee cup | bright red"), else at the last word.
    words = body.split()
    split = next((i for i, w in enumerate(words) if i > 0 and w in _MODIFIERS), len(words) - 1)
    thing, target = " ".join(words[:split]), " ".join(words[split:])
    return _free(raw, thing, f"{target} {thing}")


def _wear_or_place(raw: str, target: str) -> EditInstruction:
    """`put me in Y` / `in Y`: clothes or an accessory are worn ("in a tuxedo"), anything else is a place."""
    region, _ = _find_region(target)
    if (region is not None and region.name != "background") or _find_accessory(target) is not None:
        return _bare(raw, target, add=True)
    return _background(raw, target)


def _change(raw: str, thing: str, target: str) -> EditInstruction:
    if thing.strip() in _PRONOUNS:  # "turn me into a zombie": the whole picture, identity kept
        return _global(raw, target)
    thing, target = _strip_det(thing), target.strip()
    if not thing or not target:
        return _fail(raw)
    if thing in _GLOBAL_HEADS or thing in _WHOLE:
        return _global(raw, target, lighting=thing.startswith("light"))
    region, word = _find_region(thing)
    if region is not None:
        return _region_edit(raw, region, word, target)
    item = _find_accessory(thing)
    if item is not None:
        return _accessory(raw, item, target)
    return _free(raw, thing, target)


def _bare(raw: str, s: str, *, add: bool = False) -> EditInstruction:
    """A phrase without a verb: find a region word in it, an accessory, or a global look."""
    original, s = s.strip(), _strip_det(s)
    if not s:
        return _fail(raw)
    if (m := _LOOK_TAIL.fullmatch(s)) and _find_region(m[1])[0] is None:
        return _global(raw, m[1], lighting=s.endswith(("lighting", "light", "lights")))
    region, word = _find_region(s)
    if region is not None:
        target = _strip_det(original, articles=False)
        if s == word and not add:
            raise BadInstruction(message=_help(f"What should the {word} become? For example “{word}: …”."))
        if region.name == "background":
            target = _strip_det(re.sub(rf"\b(?:as |for )?(?:the |a |my )?{re.escape(word)}\b", "", s).strip(" ,"))
            if not target:
                raise BadInstruction(message=_help("What background would you like? For example “background: …”."))
        return _region_edit(raw, region, word, target)
    item = _find_accessory(s)
    if item is not None:
        return _accessory(raw, item, s)
    if _look(s):
        return _global(raw, s)
    if add and _is_phrase(s):
        return _add(raw, s)
    return _fail(raw)


def _add(raw: str, item_text: str, where: str | None = None) -> EditInstruction:
    item_text = item_text.strip()
    if not _is_phrase(_strip_det(item_text)):
        return _fail(raw)
    if where is not None:
        where = _strip_det(where)
        region, word = _find_region(where)
        if region is not None:
            if region.name == "background":
                return _region_edit(raw, region, word, f"{item_text} in the background", action="add")
            return _region_edit(raw, region, word, f"{word} with {item_text}", action="add")
        if where in _WHOLE or where in _GLOBAL_HEADS:
            return _global(raw, item_text)
        return _free(raw, where, f"{where} with {item_text}", action="add")
    item = _find_accessory(item_text)
    if item is not None:
        return _accessory(raw, item, item_text)
    region, word = _find_region(item_text)
    if region is not None and region.name != "background":
        return _region_edit(raw, region, word, item_text, action="add")
    # Something with no natural place ("add a dragon"): it goes into the background.
    bg = _region("background")
    return _region_edit(raw, bg, "background", f"{_strip_det(item_text)} in the background", action="add")


def _remove(raw: str, thing: str) -> EditInstruction:
    thing = _strip_det(thing)
    if not thing or not _is_phrase(thing):
        return _fail(raw)
    item = _find_accessory(thing)
    if item is not None:
        words, _, bare = item
        word = next(w for w in words if re.search(rf"\b{re.escape(w)}\b", thing))
        return EditInstruction(
            text=raw,
            kind="inpaint",
            region=_ACCESSORY.name,
            prompt=bare,
            queries=(word,),
            negative=thing,
            action="remove",
            strength=1.0,
            grow=_ACCESSORY.grow,
        )
    region, word = _find_region(thing)
    if region is not None:
        if not region.bare:
            raise BadInstruction(
                message=f"I can change {word} but not remove it. Try something like “change the {word} to a hoodie”."
            )
        return EditInstruction(
            text=raw,
            kind="inpaint",
            region=region.name,
            prompt=region.bare,
            queries=_queries(region, word),
            invert=region.invert,
            negative="" if region.invert else thing,
            action="remove",
            strength=1.0,
            grow=region.grow,
        )
    return EditInstruction(
        text=raw,
        kind="inpaint",
        region=thing,
        prompt="clean natural surface, seamless",
        queries=(thing,),
        negative=thing,
        action="remove",
        strength=1.0,
    )


def _background(raw: str, target: str) -> EditInstruction:
    target = target.strip()
    if not target:
        return _fail(raw)
    return _region_edit(raw, _region("background"), "background", target)


# --- builders ---------------------------------------------------------------------------------------


def _region_edit(
    raw: str, region: Region, word: str, target: str, *, action: Literal["change", "add"] = "change"
) -> EditInstruction:
    target = target.strip(" ,")
    if not _is_phrase(target):
        return _fail(raw)
    named = any(re.search(rf"\b{re.escape(w)}\b", target) for w in region.words)
    if region.name == "background" and _strip_det(target) in _BLUR:
        prompt = "blurred background, bokeh, shallow depth of field"
    elif region.template.startswith("wearing ") and (named or target.startswith("wearing ")):
        prompt = target if target.startswith("wearing ") else f"wearing {target}"
    elif named and (region.name != "background" or "background" in target):
        prompt = target
    else:
        prompt = region.template.format(target=target, word=word)
    return EditInstruction(
        text=raw,
        kind="inpaint",
        region=region.name,
        prompt=prompt,
        queries=_queries(region, word),
        invert=region.invert,
        action=action,
        strength=region.strength,
        grow=region.grow,
    )


def _accessory(raw: str, item: tuple[tuple[str, ...], tuple[str, ...], str], target: str) -> EditInstruction:
    if target.split()[0] in _DETERMINERS and target.split()[0] not in ("a", "an"):
        target = _strip_det(target)
    prompt = target if target.startswith("wearing ") else f"wearing {target}"
    return EditInstruction(
        text=raw,
        kind="inpaint",
        region=_ACCESSORY.name,
        prompt=prompt,
        queries=item[1],
        action="add",
        strength=_ACCESSORY.strength,
        grow=_ACCESSORY.grow,
    )


def _free(raw: str, thing: str, prompt: str, *, action: Literal["change", "add"] = "change") -> EditInstruction:
    thing = _strip_det(thing)
    if not _is_phrase(thing) or not _is_phrase(prompt):
        return _fail(raw)
    return EditInstruction(
        text=raw, kind="inpaint", region=thing, prompt=prompt.strip(), queries=(thing,), action=action
    )


def _global(raw: str, look: str, *, lighting: bool = False) -> EditInstruction:
    look = _strip_det(look.strip(" ,"))
    if not _is_phrase(look):
        return _fail(raw)
    known = _look(look)
    if lighting:
        prompt, strength = (look if "light" in look else f"{look} lighting"), 0.35
    elif known is not None:
        template, strength = _LOOKS[known]
        prompt = template.format(word=known)
        if look != known:
            prompt = f"{look}, {prompt}"
    else:
        prompt, strength = look, 0.45
    return EditInstruction(
        text=raw, kind="global", region="image", prompt=prompt, action="look", strength=strength, grow=0.0
    )


# --- helpers ----------------------------------------------------------------------------------------


def _normalise(text: str) -> str:
    """Lower-case, drop emoji/symbols, unify arrows to ':', strip politeness and trailing punctuation."""
    text = unicodedata.normalize("NFKC", text).casefold()
    text = re.sub(r"\s*(?:->|=>|→|⇒|➡️?)\s*", ": ", text)
    kept = []
    for ch in text:
        cat = unicodedata.category(ch)
        if cat[0] in "LN" or ch in ":&'-" or ch.isspace():
            kept.append(ch)
        elif ch in ',.;!?"()[]{}':
            kept.append(" ")
        else:
            kept.append(" ")
    text = re.sub(r"\s+", " ", "".join(kept)).strip(" -'")
    text = text.replace("’", "'")
    previous = None
    while previous != text:
        previous = text
        text = _POLITE_HEAD.sub("", text).strip()
        text = _POLITE_TAIL.sub("", text).strip(" -'")
    return text


def _strip_det(s: str, *, articles: bool = True) -> str:
    """Drop leading determiners and possessives ("the", "my"); with `articles=False` keep "a"/"an"."""
    words = s.strip().split()
    while words and words[0] in _DETERMINERS and (articles or words[0] not in ("a", "an")):
        words = words[1:]
    return " ".join(words)


def _is_phrase(s: str) -> bool:
    """Has at least one letter (a lone number or dash is not something to draw)."""
    return any(ch.isalpha() for ch in s)


def _region(name: str) -> Region:
    return next(r for r in REGIONS if r.name == name)


def _region_words() -> list[tuple[str, Region]]:
    return sorted(((w, r) for r in REGIONS for w in r.words), key=lambda wr: len(wr[0]), reverse=True)


_WORDS = _region_words()


def _find_region(s: str) -> tuple[Region | None, str]:
    """The region whose longest word appears in `s` (whole words), and that word."""
    for word, region in _WORDS:
        if re.search(rf"(?:^|\s){re.escape(word)}(?:$|\s|')", s):
            return region, word
    return None, ""


def _find_region_prefix(s: str) -> tuple[str, Region | None] | None:
    """A region word (or a global head, as region None) that `s` starts with, longest first."""
    for word, region in _WORDS:
        if s == word or s.startswith(word + " "):
            return word, region
    for head in sorted(_GLOBAL_HEADS, key=len, reverse=True):
        if s.startswith(head + " "):
            return head, None
    return None


def _find_accessory(s: str) -> tuple[tuple[str, ...], tuple[str, ...], str] | None:
    for item in _ACCESSORIES:
        if any(re.search(rf"(?:^|\s){re.escape(w)}(?:$|\s)", s) for w in item[0]):
            return item
    return None


def _look(s: str) -> str | None:
    """The longest known look word in `s`, if any."""
    for word in sorted(_LOOKS, key=len, reverse=True):
        if re.search(rf"(?:^|\s){re.escape(word)}(?:$|\s)", s):
            return word
    return None


def _queries(region: Region, word: str) -> tuple[str, ...]:
    if word in region.specific and word not in region.queries:
        return (*region.queries, word)
    return region.queries


def _help(lead: str) -> str:
    examples = "\n".join(f"• {e}" for e in EXAMPLES)
    return (
        f"{lead} Reply to an image with an edit such as:\n{examples}\n"
        "Or send a mask image (white = change) together with your text."
    )


def _fail(raw: str) -> NoReturn:
    shown = echo(raw, 60)
    raise BadInstruction(message=_help(f"I couldn't tell what to change in “{shown}”."))
