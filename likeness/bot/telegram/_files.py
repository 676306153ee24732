"""Fetching a selfie from a message: pick the attachment, check its size before downloading, then fetch it."""

from __future__ import annotations

from urllib.parse import urlsplit

from telegram import Document, Message, PhotoSize

from likeness.config import Settings
from likeness.errors import InvalidImage
from likeness.images import format_size

__all__ = ["BOT_API_DOWNLOAD_LIMIT", "download_limit", "download_selfie", "selfie_attachment"]

# The public Bot API serves files up to 20 MB to bots; a self-hosted Bot API server has no such limit.
BOT_API_DOWNLOAD_LIMIT = 20 * 1024 * 1024
PUBLIC_API_HOST = "api.telegram.org"

_NOT_AN_IMAGE = "That file isn't an image I can read. Please send a photo (JPEG, PNG, WebP, HEIC or AVIF)."


def download_limit(settings: Settings) -> int:
    """Largest selfie the bot will download: our own limit, capped by the public Bot API's."""
    if urlsplit(settings.telegram_api_url).hostname == PUBLIC_API_HOST:
        return min(settings.max_upload_bytes, BOT_API_DOWNLOAD_LIMIT)
    return settings.max_upload_bytes


def selfie_attachment(message: Message | None) -> PhotoSize | Document | None:
    """The photo (largest size) or file attached to `message`, if any."""
    if message is None:
        return None
    if message.photo:
        return message.photo[-1]
    return message.document


async def download_selfie(attachment: PhotoSize | Document, limit: int) -> bytes:
    """Download after cheap checks: an announced non-image type or a size over `limit` fails before any byte."""
    if isinstance(attachment, Document):
        mime = attachment.mime_type or ""
        if mime and not mime.startswith("image/"):
            raise InvalidImage(message=_NOT_AN_IMAGE)
    _check_size(attachment.file_size, limit)
    file = await attachment.get_file()
    _check_size(file.file_size, limit)
    data = bytes(await file.download_as_bytearray())
    _check_size(len(data), limit)
    return data


def _check_size(size: int | None, limit: int) -> None:
    if size is not None and size > limit:
        raise InvalidImage(message=f"That file is too large ({format_size(size)}); the limit is {format_size(limit)}.")
