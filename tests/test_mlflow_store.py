"""The MLflow handler the bundles use: runs started together on a new local SQLite store both get it (MONAI's handler
alone lets both migrate the new file, and one fails before training starts)."""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

from attok_monai.handlers.mlflow_store import MLFlowHandler, effective_tracking_uri, sqlite_store_lock


def _open_store(uri: str, barrier, results) -> None:
    barrier.wait()
    try:
        handler = MLFlowHandler(tracking_uri=uri, experiment_name="race")
        handler.client.search_experiments(max_results=1)
        results.put("ok")
    except Exception as e:  # reported to the parent, which asserts on it
        results.put(f"{type(e).__name__}: {e}"[:300])


def test_two_runs_open_one_new_store_together(tmp_path: Path):
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_open_store, args=(uri, barrier, results)) for _ in range(2)]
    for p in procs:
        p.start()
    outcomes = [results.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    assert outcomes == ["ok"] * 2
    assert (tmp_path / "mlruns.db").is_file()


def test_uri_resolution_and_non_sqlite_uris(tmp_path: Path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    assert effective_tracking_uri(None) == f"sqlite:///{tmp_path / 'mlruns.db'}"  # MONAI 1.6's default
    assert effective_tracking_uri("sqlite:///x.db") == "sqlite:///x.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://server:5000")
    assert effective_tracking_uri("sqlite:///x.db") == "http://server:5000"  # the variable wins, as in MONAI
    with sqlite_store_lock("http://server:5000"):  # nothing is opened for a remote URI
        pass
    assert not list(tmp_path.iterdir())
