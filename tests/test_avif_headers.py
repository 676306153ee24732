"""The AV1 sequence headers of an AVIF file, read before libavif decodes: what its streams will really cost."""

from __future__ import annotations

import contextlib
import functools

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from likeness._avif_headers import ImageSequence, _max_frame_size, coded_pixels
from likeness.errors import InvalidImage
from likeness.images import load_image, sniff_image
from tests.helpers.image_bytes import quadrants, save, with_ispe

LIMITS = {"max_bytes": 10_000_000, "max_pixels": 1_000_000}


def avif(img: Image.Image, **params: object) -> bytes:
    return save(img, "AVIF", **{"quality": 60, "speed": 10, **params})


@functools.cache
def lying_avif() -> bytes:
    """A 2048×2048 AV1 stream whose `ispe` header says 64×64: 4.2 megapixels decoded, 4096 declared."""
    return with_ispe(avif(Image.new("RGB", (2048, 2048), (120, 130, 140))), 64, 64)


def test_a_still_image_counts_its_frame() -> None:
    assert coded_pixels(avif(quadrants(64, 48))) == 64 * 48


def test_alpha_is_a_second_stream() -> None:
    rgba = Image.new("RGBA", (64, 48), (200, 0, 0, 255))
    rgba.paste((0, 0, 0, 0), (0, 0, 32, 48))
    assert coded_pixels(avif(rgba)) == 2 * 64 * 48


def test_trailing_junk_is_ignored_as_libavif_does() -> None:
    data = avif(quadrants())
    assert coded_pixels(data + b"\x00junk\xff" * 1000) == coded_pixels(data)
    assert load_image(data + b"\x00junk\xff" * 1000, **LIMITS).size == (64, 48)


def test_the_stream_counts_not_the_header() -> None:
    assert coded_pixels(lying_avif()) == 2048 * 2048


def test_a_stream_bigger_than_its_header_is_refused_before_decoding() -> None:
    # `Image.open` sees the 64×64 header only; libavif would decode the whole 2048×2048 stream.
    assert sniff_image(lying_avif(), max_bytes=10_000_000, max_pixels=10_000_000) == (64, 64)
    with pytest.raises(InvalidImage, match="too many pixels"):
        sniff_image(lying_avif(), **LIMITS)
    with pytest.raises(InvalidImage, match="too many pixels"):
        load_image(lying_avif(), **LIMITS)


def test_animations_are_refused_by_name() -> None:
    frames = [Image.new("RGB", (32, 32), colour) for colour in ("red", "green")]
    data = save(frames[0], "AVIF", save_all=True, append_images=frames[1:])
    with pytest.raises(ImageSequence):
        coded_pixels(data)
    with pytest.raises(InvalidImage, match="animated AVIF"):
        load_image(data, **LIMITS)


def test_a_cut_file_is_refused() -> None:
    data = avif(Image.effect_noise((64, 64), 60).convert("RGB"))
    with pytest.raises(ValueError, match="outside the file"):
        coded_pixels(data[:-10])


class _BitWriter:
    def __init__(self) -> None:
        self.bits = ""

    def put(self, value: int, n: int) -> None:
        self.bits += format(value, f"0{n}b") if n else ""

    def payload(self) -> bytes:
        padded = self.bits + "0" * (-len(self.bits) % 8)
        return int(padded, 2).to_bytes(len(padded) // 8, "big")


def test_a_full_sequence_header_is_read_through() -> None:
    """Timing info, a decoder model and two operating points before the frame size (libavif writes the short form)."""
    w = _BitWriter()
    w.put(0, 3)  # seq_profile
    w.put(0, 1)  # still_picture
    w.put(0, 1)  # reduced_still_picture_header
    w.put(1, 1)  # timing_info_present_flag
    w.put(1001, 32)  # num_units_in_display_tick
    w.put(60000, 32)  # time_scale
    w.put(1, 1)  # equal_picture_interval
    w.put(0b00100, 5)  # uvlc: two leading zeros, then 1 and two bits: 3
    w.put(1, 1)  # decoder_model_info_present_flag
    w.put(9, 5)  # buffer_delay_length_minus_1: delays are 10 bits
    w.put(1, 32)  # num_units_in_decoding_tick
    w.put(0, 10)  # buffer_removal_time_length_minus_1, frame_presentation_time_length_minus_1
    w.put(1, 1)  # initial_display_delay_present_flag
    w.put(1, 5)  # operating_points_cnt_minus_1: two points
    for level, model in ((8, 1), (4, 0)):
        w.put(0x101, 12)  # operating_point_idc
        w.put(level, 5)  # seq_level_idx; over 7 a seq_tier bit follows
        if level > 7:
            w.put(0, 1)
        w.put(model, 1)  # decoder_model_present_for_this_op
        if model:
            w.put(5, 10)  # decoder_buffer_delay
            w.put(5, 10)  # encoder_buffer_delay
            w.put(0, 1)  # low_delay_mode_flag
        w.put(1, 1)  # initial_display_delay_present_for_this_op
        w.put(9, 4)  # initial_display_delay_minus_1
    w.put(15, 4)  # frame_width_bits_minus_1
    w.put(14, 4)  # frame_height_bits_minus_1
    w.put(4031, 16)  # max_frame_width_minus_1
    w.put(3023, 15)  # max_frame_height_minus_1
    assert _max_frame_size(w.payload()) == (4032, 3024)
    with pytest.raises(ValueError, match="truncated"):
        _max_frame_size(w.payload()[:-3])


SAMPLES = [avif(quadrants(40, 30)), avif(quadrants(40, 30).convert("RGBA")), lying_avif()]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(range(len(SAMPLES))), st.data())
def test_damaged_files_raise_value_error_only(index: int, data: st.DataObject) -> None:
    buf = bytearray(SAMPLES[index])
    for _ in range(data.draw(st.integers(min_value=1, max_value=6), label="flips")):
        pos = data.draw(st.integers(min_value=0, max_value=len(buf) - 1), label="pos")
        buf[pos] = data.draw(st.integers(min_value=0, max_value=255), label="byte")
    cut = data.draw(st.integers(min_value=0, max_value=len(buf)), label="cut")
    with contextlib.suppress(ValueError):  # the property: a count or ValueError, nothing else
        assert coded_pixels(bytes(buf[:cut])) >= 0
