"""`likeness moderate`: operators ban or unban users and read the abuse log (refusals, flags, requests)."""

from __future__ import annotations

import argparse
import asyncio
import sys

from likeness.config import Settings
from likeness.errors import LikenessError

__all__ = ["add_arguments", "run"]

PLATFORMS = ("telegram", "discord", "playground")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    ban = sub.add_parser("ban", help="refuse every request of a user (no GPU time)")
    ban.add_argument("user_id")
    ban.add_argument("--platform", choices=PLATFORMS, required=True)
    ban.add_argument("--reason", required=True, help="kept in the audit log")
    unban = sub.add_parser("unban", help="lift a ban")
    unban.add_argument("user_id")
    unban.add_argument("--platform", choices=PLATFORMS, required=True)
    sub.add_parser("bans", help="list current bans")
    log = sub.add_parser("log", help="recent audit events, newest first")
    log.add_argument("--kind", choices=("request", "refusal", "flag", "ban", "unban"))
    log.add_argument("--limit", type=int, default=20)


def run(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(_run(Settings(), args))
    except LikenessError as exc:
        print(exc.user_message, file=sys.stderr)
        return 1


async def _run(settings: Settings, args: argparse.Namespace) -> int:
    from redis.asyncio import Redis

    from likeness.queue import AbuseLog

    redis = Redis.from_url(settings.redis_dsn)
    try:
        abuse = AbuseLog(redis, settings.abuse_retention_days)
        if args.action == "ban":
            await abuse.ban(args.user_id, args.platform, reason=args.reason, by="operator")
            print(f"Banned {args.platform} user {args.user_id}.")
        elif args.action == "unban":
            if not await abuse.unban(args.user_id, args.platform, by="operator"):
                print(f"{args.platform} user {args.user_id} was not banned.", file=sys.stderr)
                return 1
            print(f"Unbanned {args.platform} user {args.user_id}.")
        elif args.action == "bans":
            for ban in await abuse.bans():
                print(f"{ban.platform:<10} {ban.user_id:<24} {ban.at:%Y-%m-%d %H:%M} by {ban.by}: {ban.reason}")
        else:
            for event in await abuse.recent(args.kind, args.limit):
                where = f"{event.platform}:{event.chat_id}" if event.chat_id else event.platform
                print(f"{event.at:%Y-%m-%d %H:%M:%S} {event.kind:<8} {event.user_id:<20} {where:<24} {event.detail}")
    finally:
        await redis.aclose()
    return 0
