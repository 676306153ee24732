"""Payload models: small, validated, and unchanged by a trip through JSON."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from likeness.queue import Delivery, JobPayload, Origin, ProgressEvent, ResultMeta, ResultRecord
from likeness.requests import PortraitSpec, edit_spec


def test_origin_rejects_oversized_platform_data():
    Origin(platform="discord", chat_id="1", user_id="2", extra={"interaction_token": "t" * 200, "app_id": "9"})
    with pytest.raises(ValidationError):
        Origin(platform="discord", chat_id="1", user_id="2", extra={"blob": "x" * 5000})
    with pytest.raises(ValidationError):
        Origin(platform="irc", chat_id="1", user_id="2")  # type: ignore[arg-type]


def test_params_are_bounded():
    with pytest.raises(ValidationError):
        PortraitSpec(preset="ghibli", count=5)
    with pytest.raises(ValidationError):
        PortraitSpec(preset="ghibli", seed=-1)
    with pytest.raises(ValidationError):
        PortraitSpec(preset="")


def test_delivery_round_trips_through_json():
    origin = Origin(platform="telegram", chat_id="c", user_id="u", thread_id="7", age_restricted=True)
    payload = JobPayload(
        job_id="j", kind="reroll", mode="portrait", origin=origin, portrait=PortraitSpec(preset="ghibli", seed=7),
        selfie_blob_id="s-1", parent_result_id="r-p", seeds=(1, 2),
    )  # fmt: skip
    record = ResultRecord(
        result_id="r-j", parent_id="r-p", job_id="j", kind="reroll", request=payload, seeds=(1, 2),
        image_blob_ids=("img-j-0", "img-j-1"),
        metadata=ResultMeta(
            model="tiny", preset="ghibli", preset_title="Ghibli", likeness_scores=(90.0, None), details={"steps": 4}
        ),
        owner_user_id="u", origin=origin,
    )  # fmt: skip
    delivery = Delivery(job_id="j", kind="reroll", origin=origin, result=record)
    assert Delivery.model_validate_json(delivery.model_dump_json()) == delivery and delivery.ok
    failed = Delivery(job_id="j", kind="portrait", origin=origin, error_code="no_face", user_message="no face")
    assert not failed.ok
    assert ProgressEvent(job_id="j", stage="done").final and not ProgressEvent(job_id="j", stage="step").final


def test_an_edit_travels_parsed_and_comes_back_equal():
    """The worker runs the instruction the bot parsed: it crosses Redis as a parsed `EditInstruction`."""
    origin = Origin(platform="telegram", chat_id="c", user_id="u")
    edit = edit_spec("make the hair blue", has_mask=False, max_chars=400)
    payload = JobPayload(job_id="j", kind="edit", mode="edit", origin=origin, edit=edit, seeds=(3,))
    again = JobPayload.model_validate_json(payload.model_dump_json())
    assert again == payload and again.edit is not None
    assert (again.edit.instruction.region, again.edit.instruction.prompt) == ("hair", edit.instruction.prompt)
