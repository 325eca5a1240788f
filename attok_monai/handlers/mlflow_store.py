"""MONAI's ``MLFlowHandler`` with the creation of a local SQLite store serialised across processes.

With no tracking URI, MONAI 1.6's handler logs to ``sqlite:///<cwd>/mlruns.db``, and MLflow creates the schema of a
new SQLite store (its alembic migrations) when the client first opens it. Two runs started together in one folder
(two bundles, or a generalist and a bundle, side by side on a workstation) both migrate the new file, and one of them
fails while the handler is built (``sqlite3.OperationalError: duplicate column name: step``), before training starts.
:class:`MLFlowHandler` opens the store under a file lock (``<db>.lock`` beside it), so the second run waits for the
first one's schema and then uses it; every other behaviour is MONAI's. Remote and non-SQLite URIs are left as they are.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from monai.handlers import MLFlowHandler as _MonaiMLFlowHandler

__all__ = ["MLFlowHandler", "sqlite_store_lock", "effective_tracking_uri"]

_SQLITE = "sqlite:///"


def effective_tracking_uri(tracking_uri: str | None) -> str:
    """The URI MONAI's handler will log to: ``MLFLOW_TRACKING_URI``, else ``tracking_uri``, else
    ``sqlite:///<cwd>/mlruns.db`` (MONAI 1.6's default)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or tracking_uri or _SQLITE + os.path.join(os.getcwd(), "mlruns.db")


@contextmanager
def sqlite_store_lock(uri: str) -> Iterator[None]:
    """Hold a file lock beside a local SQLite store while it is created (schema migrated) and the block runs; for
    any other URI, do nothing."""
    if not uri.startswith(_SQLITE) or uri[len(_SQLITE):] in ("", ":memory:"):
        yield
        return
    from filelock import FileLock

    db = Path(uri[len(_SQLITE):])
    db.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{db}.lock"):
        import mlflow

        mlflow.MlflowClient(tracking_uri=uri).search_experiments(max_results=1)  # creates the schema if new
        yield


class MLFlowHandler(_MonaiMLFlowHandler):
    """``monai.handlers.MLFlowHandler`` (same arguments) whose local SQLite store is created under a file lock, so
    runs started together in one working directory do not race on a new store's schema."""

    def __init__(self, tracking_uri: str | None = None, *args: Any, **kwargs: Any) -> None:
        with sqlite_store_lock(effective_tracking_uri(tracking_uri)):
            super().__init__(tracking_uri, *args, **kwargs)
