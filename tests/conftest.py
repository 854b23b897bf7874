"""Suite-wide fixtures: what one test leaves in this process's global caches is released after it.

MLflow keeps every tracking store it builds for the life of the process (an ``lru_cache`` of
stores per URI, and a class-level map of SQLAlchemy engines per database URI, never evicted):
right for a node daemon with one store, but the suite runs hundreds of in-process runs, each on
its own ``tmp_path`` SQLite store. Measured: every such store keeps ~44,000 objects (~9 MB)
alive after its test, so the heap grew to 2.6 GB and pytest's closing ``gc.collect()`` passes
took over ten minutes after the summary. No test uses another test's ``tmp_path`` store, so
dropping them from the caches changes nothing a test checks (a store still in use by a module
fixture is rebuilt on its next call, on the same database).

A new store also costs MLflow's schema migrations on its empty database: 9-13 s at load 9-12 on
this machine (a few seconds quiet) against 0.6 s for a copy of an already migrated empty
database. ``mlflow_stores_from_template`` (opt-in per test file) migrates one empty store per
session and gives every new in-process store a copy of it; each store is still a real, empty,
separate MLflow database that MLflow opens, checks and writes itself. Node processes still
migrate their own stores.
"""

from __future__ import annotations

import os
import shutil
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest


_ENGINE_MAPS = ("mlflow.store.tracking.sqlalchemy_store", "mlflow.store.model_registry.sqlalchemy_store")
_STORE_CACHES = ("mlflow.tracking._tracking_service.utils", "mlflow.tracking._model_registry.utils")


def _engine_maps() -> dict[str, dict]:
    """MLflow's class-level engine maps (database URI -> engine), of the modules imported so far."""
    return {name: sys.modules[name].SqlAlchemyStore._engine_map for name in _ENGINE_MAPS if name in sys.modules}


def _release_mlflow_stores(before: dict[str, set[str]]) -> None:
    """Dispose of the engines opened since ``before`` and forget every cached store (rebuilt on demand)."""
    opened = {name: set(engines) - before.get(name, set()) for name, engines in _engine_maps().items()}
    if not any(opened.values()):
        return
    for name in _STORE_CACHES:
        if name in sys.modules:
            utils = sys.modules[name]
            registry = (utils._tracking_store_registry if hasattr(utils, "_tracking_store_registry")
                        else utils._get_store_registry())
            registry._get_store_with_resolved_uri.cache_clear()
    for name, uris in opened.items():
        engines = _engine_maps()[name]
        for uri in uris:
            engines.pop(uri).dispose()


@pytest.fixture(autouse=True, scope="module")
def _release_module_caches() -> Iterator[None]:
    """After each test file: what its module-scoped fixtures opened (before any test began) is let go."""
    before = {name: set(engines) for name, engines in _engine_maps().items()}
    yield
    _release_mlflow_stores(before)


@pytest.fixture(autouse=True)
def _release_test_caches() -> Iterator[None]:
    """After each test: the MLflow stores and engines it opened in this process are let go."""
    before = {name: set(engines) for name, engines in _engine_maps().items()}
    yield
    _release_mlflow_stores(before)


@pytest.fixture(scope="session")
def _mlflow_template(tmp_path_factory) -> Path:
    """An empty MLflow store migrated by MLflow itself, once per session; its engine let go."""
    from mlflow.tracking import MlflowClient

    from fedacq.track import store_uri

    before = {name: set(engines) for name, engines in _engine_maps().items()}
    folder = tmp_path_factory.mktemp("mlflow_template")
    MlflowClient(tracking_uri=store_uri(folder)).search_experiments()  # builds the tables
    _release_mlflow_stores(before)
    return folder / "mlflow.db"


@pytest.fixture(scope="module")
def mlflow_stores_from_template(_mlflow_template: Path) -> Iterator[None]:
    """For this file's tests and module fixtures: a new local store starts as a copy of the template."""
    import fedacq.track as track

    original = track.store_uri
    lock = threading.Lock()  # both parties of an in-process run may open one store at once

    def store_uri(store: str | Path) -> str:
        uri = original(store)
        if uri.startswith("sqlite:///"):
            database = Path(uri[len("sqlite:///"):])
            with lock:
                if not database.exists():
                    partial = database.with_name(database.name + ".copying")
                    shutil.copyfile(_mlflow_template, partial)
                    os.replace(partial, database)
        return uri

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(track, "store_uri", store_uri)
        yield
