"""Likeness: identity-preserving AI portraits from a selfie, served by Discord and Telegram bots."""

__version__ = "0.1.0"
__all__ = ["__version__"]
