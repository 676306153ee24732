"""The local web playground (`likeness up`): upload a selfie, pick presets, watch progress, edit results."""

from likeness.bot.playground._server import PLATFORM, build_app, consume_deliveries

__all__ = ["PLATFORM", "build_app", "consume_deliveries"]
