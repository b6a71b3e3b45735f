"""Run one background-job worker: `manage.py roomcast_worker` (run N of them at scale)."""

from __future__ import annotations

import logging
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from rooms import live, relay
from rooms.workers import Worker


class Command(BaseCommand):
    help = "Run stored background jobs (exports, digests) with leases, retries and a reaper."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--queue", action="append", dest="queues", help="default: default")
        parser.add_argument("--worker-id", default=None, help="unique per worker (default: random)")
        parser.add_argument(
            "--interval", type=float, default=0.5, help="seconds between looks at an empty queue"
        )
        parser.add_argument(
            "--maintenance-interval",
            type=float,
            default=5.0,
            help="seconds between reaping dead workers' jobs and deleting expired files",
        )
        parser.add_argument("--max-jobs", type=int, default=None, help="stop after this many")

    def handle(self, *args: Any, **options: Any) -> None:
        logging.getLogger("rooms").setLevel(logging.INFO)
        if not relay.layer_is_shared():
            # The in-memory layer cannot reach the web process: pushes go through the database.
            live.use_relay(True)
        worker = Worker(
            worker_id=options["worker_id"],
            queues=tuple(options["queues"] or ["default"]),
            interval=options["interval"],
            maintenance_interval=options["maintenance_interval"],
        )
        self.stdout.write(f"worker {worker.worker_id} ready", ending="\n")
        self.stdout.flush()
        worker.run(max_jobs=options["max_jobs"])
