"""``manage.py celeriac_outbox``: relay outbox rows left behind (after a crash) to the broker."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from ...outbox import relay, relay_forever


class Command(BaseCommand):
    help = ("Send task messages committed to the outbox but never relayed (the sender died "
            "between its commit and the relay). Runs until stopped, or once with --once.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--once", action="store_true", help="Relay what is there, then exit.")
        parser.add_argument("--interval", type=float, default=5.0, help="Seconds between passes.")
        parser.add_argument("--older-than", type=float, default=10.0,
                            help="Leave rows younger than this many seconds to their own commit hook.")
        parser.add_argument("--database", default=None, help="The database alias.")

    def handle(self, *args: Any, **options: Any) -> None:
        from ....._state import get_current_app

        app = get_current_app()
        if options["once"]:
            count = relay(app, older_than=options["older_than"], using=options["database"])
            self.stdout.write(f"Relayed {count} message(s).")
            return
        self.stdout.write(f"Relaying the outbox every {options['interval']:g}s (Ctrl+C to stop).")
        try:
            relay_forever(app, interval=options["interval"], older_than=options["older_than"],
                          using=options["database"])
        except KeyboardInterrupt:
            pass
