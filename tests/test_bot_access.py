"""Operator allowlists, admins and who may change whose results."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from likeness.bot import AccessPolicy
from likeness.config import Settings
from likeness.errors import NotAllowed, NotRequester


def test_open_bot_allows_everyone(make_settings: Callable[..., Settings]) -> None:
    AccessPolicy.from_settings(make_settings()).check("u1", "c1")


def test_allowlists(make_settings: Callable[..., Settings]) -> None:
    policy = AccessPolicy.from_settings(make_settings(allowed_chats="-100,guild-7", allowed_users="42", admins="1"))
    policy.check("u1", "-100")
    policy.check("u1", "dm-9", guild_id="guild-7")
    policy.check("42", "anywhere")
    policy.check("1", "anywhere")
    with pytest.raises(NotAllowed) as err:
        policy.check("u1", "other-chat")
    assert "private" in err.value.user_message


def test_only_requester_changes_results_unless_collaborating(make_settings: Callable[..., Settings]) -> None:
    policy = AccessPolicy.from_settings(make_settings(admins=["1"]))
    policy.check_owner("owner", "owner", collaborate=False)
    policy.check_owner("1", "owner", collaborate=False)
    policy.check_owner("other", "owner", collaborate=True)
    with pytest.raises(NotRequester):
        policy.check_owner("other", "owner", collaborate=False)
