"""The Telegram frontend (python-telegram-bot v22): a thin adapter over `likeness.bot.BotCore` and the queue.

`run_telegram(settings)` runs the bot (long polling, or a webhook when `telegram_webhook_url` is set);
`serve(settings, core)` runs it on a core shared with other frontends (`likeness up`);
`build_application(settings, core)` builds the PTB application alone. Never imports torch.
"""

from likeness.bot.telegram._app import ALLOWED_UPDATES, build_application, run_telegram, serve
from likeness.bot.telegram._files import BOT_API_DOWNLOAD_LIMIT, download_limit
from likeness.bot.telegram._handlers import REROLL_EMOJI

__all__ = [
    "ALLOWED_UPDATES",
    "BOT_API_DOWNLOAD_LIMIT",
    "REROLL_EMOJI",
    "build_application",
    "download_limit",
    "run_telegram",
    "serve",
]
