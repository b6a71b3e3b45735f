"""`manage.py serve`: daphne and one job worker, started and stopped together (`make run`)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

# Seconds the children get to stop by themselves after Ctrl-C, before they are told to.
GRACE = 10.0


class Command(BaseCommand):
    help = "Serve the site with daphne and run a background-job worker beside it."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--port", default="8000")
        parser.add_argument("--bind", default="127.0.0.1")
        parser.add_argument("--workers", type=int, default=1, help="job workers to run")
        parser.add_argument("daphne_args", nargs="*", help="more daphne options (after --)")

    def handle(self, *args: Any, **options: Any) -> None:
        python = sys.executable
        server = [python, "-m", "daphne", "-b", options["bind"], "-p", options["port"]]
        commands = [server + options["daphne_args"] + ["site_config.asgi:application"]]
        commands += [[python, "manage.py", "roomcast_worker"]] * options["workers"]
        children = [subprocess.Popen(command) for command in commands]
        stopping = False

        def stop(signum: int, frame: object) -> None:
            nonlocal stopping
            stopping = True
            if signum == signal.SIGTERM:
                # From a process manager, to this process only: pass it on (Ctrl-C reaches
                # every process of the group by itself).
                for child in children:
                    if child.poll() is None:
                        child.send_signal(signal.SIGTERM)

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        try:
            # When one of them stops (or Ctrl-C), stop them all: never a server without
            # its worker, or a worker left behind.
            while not stopping and all(child.poll() is None for child in children):
                time.sleep(0.2)
        finally:
            if stopping:
                # Ctrl-C reached every child too (one process group): give a worker time to
                # finish its job, since a second signal would stop it mid-job.
                deadline = time.monotonic() + GRACE
                while time.monotonic() < deadline and any(c.poll() is None for c in children):
                    time.sleep(0.1)
            for child in children:
                if child.poll() is None:
                    child.send_signal(signal.SIGTERM)
            for child in children:
                try:
                    child.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    child.kill()
                    child.wait()
        codes = [child.returncode for child in children]
        self.stdout.write(f"stopped (exit codes {codes})")
