"""How many pixels an AVIF file's AV1 streams will decode to, read from their sequence headers.

Why: libavif decodes each AV1 stream at the size its sequence header declares (up to 16384×16384, the limit it
gives dav1d) and only then scales the result to the container's `ispe` size, the only size `Image.open` sees.
Measured with Pillow 13: a 3 KiB AVIF claiming 64×64 over a 16384×16384 stream took ~1 GB and 1.2 s to
decode. So the bomb check reads the sequence headers itself: in the data of every `av01` item (found through
`iinf` and `iloc`) and in every `av1C` box. Image sequences (a `moov` box: libavif decodes the track, not the
items) are not read, so they are refused. Pure Python, no decoding; anything unexpected raises ValueError.
"""

from __future__ import annotations

import struct

__all__ = ["ImageSequence", "coded_pixels"]

_MAX_BOXES = 10_000  # a photo has a few dozen; bounds the work on a hostile file


class ImageSequence(ValueError):
    """An AVIF image sequence (animation): its frames are in a track, which is not read here."""


def coded_pixels(data: bytes) -> int:
    """Sum over the file's AV1 streams of the largest frame each declares (width × height).

    Raises `ImageSequence` for an animation, ValueError for anything else it can't vouch for.
    A stream is an `av01` item's data; one that carries no sequence header counts as the largest one found in
    the `av1C` boxes. Items are all counted, decoded or not (alpha, grid tiles, thumbnails).
    """
    top = _boxes(data, 0, len(data), lenient=True)
    if b"moov" in top or b"avis" in _brands(data, top):
        raise ImageSequence("an image sequence: libavif decodes its track, which is not read here")
    if b"meta" not in top:
        raise ValueError("no meta box")
    start, end = _one(top, b"meta")
    meta = _boxes(data, start + 4, end)  # FullBox: version and flags first
    types = _item_types(data, *_one(meta, b"iinf"))
    locations = _item_locations(data, *_one(meta, b"iloc"))
    idat = meta.get(b"idat", [(0, 0)])[0]
    config = max((_stream_pixels(data[s + 4 : e]) for s, e in _find(data, b"av1C", meta)), default=0)
    total = 0
    for item, kind in types.items():
        if kind != b"av01":
            continue
        if item not in locations:
            raise ValueError(f"av01 item {item} has no location")
        method, extents = locations[item]
        if method not in (0, 1):  # 0: offsets in the file, 1: in the `idat` box
            raise ValueError(f"construction method {method}")
        source = data if method == 0 else data[idat[0] : idat[1]]
        stream = b"".join(source[offset : offset + length] for offset, length in extents)
        if len(stream) != sum(length for _, length in extents):
            raise ValueError(f"item {item}'s data lies outside the file")
        total += _stream_pixels(stream) or config
    if total == 0:
        raise ValueError("no AV1 sequence header")
    return total


def _boxes(data: bytes, start: int, end: int, *, lenient: bool = False) -> dict[bytes, list[tuple[int, int]]]:
    """Child boxes of the span, by type: the (start, end) of each one's payload.

    `lenient` stops at the first box that doesn't fit instead of raising, as libavif does at the top level once
    it has what it needs: bytes after the file (trailing junk) don't spoil it.
    """
    found: dict[bytes, list[tuple[int, int]]] = {}
    at, count = start, 0
    while at < end:
        try:
            at = _box(data, at, end, found)
        except ValueError:
            if lenient:
                break
            raise
        count += 1
        if count > _MAX_BOXES:
            raise ValueError("too many boxes")
    return found


def _box(data: bytes, at: int, end: int, found: dict[bytes, list[tuple[int, int]]]) -> int:
    """Record the box at `at` in `found`; returns where the next one starts."""
    if end - at < 8:
        raise ValueError("truncated box header")
    size, kind = int.from_bytes(data[at : at + 4], "big"), data[at + 4 : at + 8]
    header = 8
    if size == 1:
        if end - at < 16:
            raise ValueError("truncated box header")
        size, header = int.from_bytes(data[at + 8 : at + 16], "big"), 16
    elif size == 0:
        size = end - at
    if size < header or at + size > end:
        raise ValueError(f"box {kind!r} overruns its parent")
    found.setdefault(kind, []).append((at + header, at + size))
    return at + size


def _brands(data: bytes, top: dict[bytes, list[tuple[int, int]]]) -> set[bytes]:
    start, end = _one(top, b"ftyp")
    return {data[start : start + 4]} | {data[i : i + 4] for i in range(start + 8, end - 3, 4)}


def _one(boxes: dict[bytes, list[tuple[int, int]]], kind: bytes) -> tuple[int, int]:
    spans = boxes.get(kind, [])
    if len(spans) != 1:
        raise ValueError(f"{len(spans)} {kind!r} boxes")
    return spans[0]


def _find(data: bytes, kind: bytes, meta: dict[bytes, list[tuple[int, int]]]) -> list[tuple[int, int]]:
    """The `kind` boxes among the item properties (`iprp` → `ipco`)."""
    spans = []
    for start, end in meta.get(b"iprp", []):
        for ipco_start, ipco_end in _boxes(data, start, end).get(b"ipco", []):
            spans += _boxes(data, ipco_start, ipco_end).get(kind, [])
    return spans


def _item_types(data: bytes, start: int, end: int) -> dict[int, bytes]:
    """Item id → item type (`av01`, `grid`, `Exif`...), from `iinf`'s `infe` entries (versions 2 and 3)."""
    if end - start < 6:
        raise ValueError("truncated iinf")
    first = start + (6 if data[start] == 0 else 8)  # version/flags, then a 16- or 32-bit entry count
    types: dict[int, bytes] = {}
    for infe_start, infe_end in _boxes(data, first, end).get(b"infe", []):
        version = data[infe_start] if infe_end > infe_start else -1
        if version == 2 and infe_end - infe_start >= 12:
            item, kind = struct.unpack_from(">H2x4s", data, infe_start + 4)
        elif version == 3 and infe_end - infe_start >= 14:
            item, kind = struct.unpack_from(">I2x4s", data, infe_start + 4)
        else:  # versions 0 and 1 have no item type, and AVIF doesn't use them
            raise ValueError(f"infe version {version} or truncated")
        if item in types:
            raise ValueError(f"item {item} described twice")
        types[item] = kind
    return types


def _item_locations(data: bytes, start: int, end: int) -> dict[int, tuple[int, list[tuple[int, int]]]]:
    """Item id → (construction method, [(offset, length)...]) from `iloc` (ISO/IEC 14496-12, 8.11.3)."""
    reader = _Bytes(data, start, end)
    version = reader.int(1)
    reader.int(3)  # flags
    sizes = reader.int(2)
    offset_size, length_size, base_size = sizes >> 12, (sizes >> 8) & 15, (sizes >> 4) & 15
    index_size = sizes & 15 if version in (1, 2) else 0
    locations = {}
    for _ in range(reader.int(2 if version < 2 else 4)):
        item = reader.int(2 if version < 2 else 4)
        method = reader.int(2) & 15 if version in (1, 2) else 0
        reader.int(2)  # data reference index: 0, this file
        base = reader.int(base_size)
        extents = []
        for _ in range(reader.int(2)):
            reader.int(index_size)
            offset, length = base + reader.int(offset_size), reader.int(length_size)
            if length == 0:  # "the rest of the file": not written by AVIF encoders
                raise ValueError(f"item {item} has an open-ended extent")
            extents.append((offset, length))
        if item in locations:
            raise ValueError(f"item {item} located twice")
        locations[item] = (method, extents)
    return locations


def _stream_pixels(stream: bytes) -> int:
    """The largest max_frame_width × max_frame_height among the sequence header OBUs of an AV1 stream."""
    largest, at = 0, 0
    while at < len(stream):
        header = stream[at]
        obu_type, has_extension, has_size = (header >> 3) & 15, header >> 2 & 1, header >> 1 & 1
        at += 1 + has_extension
        if has_size:
            size, at = _leb128(stream, at)
        else:
            size = len(stream) - at
        if at + size > len(stream):
            raise ValueError("OBU overruns its stream")
        if obu_type == 1:  # OBU_SEQUENCE_HEADER
            width, height = _max_frame_size(stream[at : at + min(size, 512)])  # the fields fit in 360 bytes
            largest = max(largest, width * height)
        at += size
    return largest


def _leb128(stream: bytes, at: int) -> tuple[int, int]:
    value = 0
    for i in range(8):
        if at + i >= len(stream):
            raise ValueError("truncated OBU size")
        value |= (stream[at + i] & 0x7F) << (7 * i)
        if not stream[at + i] & 0x80:
            return value, at + i + 1
    raise ValueError("OBU size over 8 bytes")


def _max_frame_size(payload: bytes) -> tuple[int, int]:
    """max_frame_width and max_frame_height from a sequence header OBU's payload (AV1 spec, 5.5.1)."""
    bits = _Bits(payload)
    bits.read(3)  # seq_profile
    bits.read(1)  # still_picture
    if bits.read(1):  # reduced_still_picture_header
        bits.read(5)  # seq_level_idx[0]
    else:
        decoder_model_info = False
        buffer_delay_length = 0
        if bits.read(1):  # timing_info_present_flag
            bits.read(32)  # num_units_in_display_tick
            bits.read(32)  # time_scale
            if bits.read(1):  # equal_picture_interval
                bits.uvlc()  # num_ticks_per_picture_minus_1
            decoder_model_info = bool(bits.read(1))
            if decoder_model_info:
                buffer_delay_length = bits.read(5) + 1
                bits.read(32)  # num_units_in_decoding_tick
                bits.read(10)  # buffer_removal_time_length_minus_1, frame_presentation_time_length_minus_1
        initial_display_delay = bits.read(1)
        for _ in range(bits.read(5) + 1):  # operating points
            bits.read(12)  # operating_point_idc
            if bits.read(5) > 7:  # seq_level_idx
                bits.read(1)  # seq_tier
            if decoder_model_info and bits.read(1):  # decoder_model_present_for_this_op
                bits.read(2 * buffer_delay_length + 1)  # decoder and encoder buffer delays, low_delay_mode_flag
            if initial_display_delay and bits.read(1):
                bits.read(4)  # initial_display_delay_minus_1
    width_bits, height_bits = bits.read(4) + 1, bits.read(4) + 1
    return bits.read(width_bits) + 1, bits.read(height_bits) + 1


class _Bytes:
    """Big-endian unsigned integers of 0 to 8 bytes, read forward within a span."""

    def __init__(self, data: bytes, start: int, end: int) -> None:
        self.data, self.at, self.end = data, start, end

    def int(self, size: int) -> int:
        if self.at + size > self.end:
            raise ValueError("truncated box")
        value = int.from_bytes(self.data[self.at : self.at + size], "big")
        self.at += size
        return value


class _Bits:
    """Bits read most significant first, as the AV1 spec's f(n) and uvlc()."""

    def __init__(self, data: bytes) -> None:
        self.value, self.left = int.from_bytes(data, "big"), 8 * len(data)

    def read(self, n: int) -> int:
        if n > self.left:
            raise ValueError("truncated sequence header")
        self.left -= n
        return (self.value >> self.left) & ((1 << n) - 1)

    def uvlc(self) -> int:
        zeros = 0
        while not self.read(1):
            zeros += 1
            if zeros >= 32:
                return (1 << 32) - 1
        return self.read(zeros) + (1 << zeros) - 1
