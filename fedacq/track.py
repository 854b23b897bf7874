"""Experiment tracking: each party logs to its *own* MLflow store.

Two parties can run in one process (tests, ``fedacq demo``), so this module
never touches MLflow's global tracking URI: every run is written through an
``MlflowClient`` bound to the party's own store. Runs that belong to one
federated job share the ``fedacq.job_id`` tag, so each side can find its part of
a job without seeing the other's store.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any, Mapping

from mlflow.tracking import MlflowClient


def store_uri(store: str | Path) -> str:
    """A tracking URI for a local store directory (SQLite inside it), or a server URL as is."""
    text = str(store)
    if "://" in text:
        return text
    path = Path(text).resolve()
    path.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path / 'mlflow.db'}"


class PartyRun:
    """One MLflow run of one party; use as a context manager (ends FAILED on error)."""

    def __init__(self, store: str | Path, party: str, experiment: str, run_name: str,
                 job_id: str, params: Mapping[str, Any] | None = None) -> None:
        uri = store_uri(store)
        self.client = MlflowClient(tracking_uri=uri)
        artifacts = None
        if "://" not in str(store) or uri.startswith("sqlite"):
            artifacts = (Path(str(store)).resolve() / "artifacts").as_uri()
        exp = self.client.get_experiment_by_name(experiment)
        exp_id = exp.experiment_id if exp else self.client.create_experiment(
            experiment, artifact_location=artifacts)
        run = self.client.create_run(exp_id, run_name=run_name,
                                     tags={"fedacq.job_id": job_id, "fedacq.party": party})
        self.run_id = run.info.run_id
        if params:
            self.log_params(params)

    def log_params(self, params: Mapping[str, Any]) -> None:
        for key, value in params.items():
            self.client.log_param(self.run_id, key, str(value)[:6000])

    def log_metric(self, key: str, value: float, step: int | None = None) -> None:
        self.client.log_metric(self.run_id, key, float(value), step=step or 0)

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Log many metrics in batches: one request per 1000, not one per metric."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(key, float(value), now, step or 0) for key, value in metrics.items()]
        for start in range(0, len(batch), 1000):
            self.client.log_batch(self.run_id, metrics=batch[start:start + 1000])

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_figure(self, figure: Any, name: str) -> None:
        """Log a matplotlib figure as a PNG artifact called ``name``."""
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / name
            figure.savefig(path, dpi=110, bbox_inches="tight")
            self.log_artifact(path)

    def log_dict(self, data: Mapping[str, Any], name: str) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / name
            path.write_text(json.dumps(data, indent=2, default=str))
            self.log_artifact(path)

    def __enter__(self) -> "PartyRun":
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        self.client.set_terminated(self.run_id, status="FAILED" if exc_type else "FINISHED")
