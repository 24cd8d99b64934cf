"""gunicorn settings for the example app (options on the command line win over these).

    PROMETHEUS_MULTIPROC_DIR=/tmp/metrics FLASK_POOLKIT_METRICS='"prometheus"' \
        gunicorn -c examples/gunicorn.conf.py -w 4 'examples.app:create_app()'

PROMETHEUS_MULTIPROC_DIR must be an empty directory that exists before gunicorn starts.
"""

from __future__ import annotations

import os
import typing as t

bind = "127.0.0.1:8000"
workers = 2


def child_exit(server: t.Any, worker: t.Any) -> None:
    """A worker exited (HUP, max_requests, crash): its gauges leave the multiprocess sums."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]
