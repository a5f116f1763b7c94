"""``consensus-store status --watch``: a tiny Live loop around ``views.status_table``."""
from __future__ import annotations

import time

from rich.console import Console
from rich.live import Live

from consensus_store.cli.views import status_table


def watch(client: object, console: Console, interval_s: float = 1.0) -> int:
    with Live(console=console, refresh_per_second=4, screen=False) as live:
        try:
            while True:
                statuses = client.cluster_status(timeout=0.5)  # type: ignore[attr-defined]
                live.update(status_table(statuses, title=time.strftime("cluster at %H:%M:%S")))
                time.sleep(interval_s)
        except KeyboardInterrupt:
            return 0
