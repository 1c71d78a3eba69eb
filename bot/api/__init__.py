"""The read-only journal API and dashboard of ``bot serve`` (FastAPI).

JSON under ``/api/...``, the dashboard at ``/``, each run's report at ``/runs/{id}/report``,
``/healthz`` for probes. It reads the journal through storage's queries only and never writes.
"""

from bot.api.app import create_app

__all__ = ["create_app"]
