"""Who may use the bot where: operator allowlists, admins, and who may change a result."""

from __future__ import annotations

from dataclasses import dataclass

from likeness.config import Settings
from likeness.errors import NotAllowed, NotRequester

__all__ = ["AccessPolicy"]


@dataclass(frozen=True, slots=True)
class AccessPolicy:
    """Allowlists from settings. Empty lists mean "everyone"; a listed user is allowed anywhere."""

    allowed_chats: frozenset[str]
    allowed_users: frozenset[str]
    admins: frozenset[str]

    @classmethod
    def from_settings(cls, settings: Settings) -> AccessPolicy:
        return cls(frozenset(settings.allowed_chats), frozenset(settings.allowed_users), frozenset(settings.admins))

    def is_admin(self, user_id: str) -> bool:
        return user_id in self.admins

    def check(self, user_id: str, chat_id: str, guild_id: str | None = None) -> None:
        """Raise `NotAllowed` unless the user or the place is on the operator's lists (if any)."""
        if not self.allowed_chats and not self.allowed_users:
            return
        if user_id in self.admins or user_id in self.allowed_users:
            return
        if chat_id in self.allowed_chats or (guild_id is not None and guild_id in self.allowed_chats):
            return
        raise NotAllowed()

    def check_owner(self, user_id: str, owner_id: str, *, collaborate: bool) -> None:
        """Only the requester (or an admin) may reroll/edit, unless the place lets everyone collaborate."""
        if collaborate or user_id == owner_id or user_id in self.admins:
            return
        raise NotRequester()
