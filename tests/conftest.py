"""Suite-wide fixtures: what one test leaves in this process's global caches is released after it.

MLflow keeps every tracking store it builds for the life of the process (an ``lru_cache`` of
stores per URI, and a class-level map of SQLAlchemy engines per database URI, never evicted):
right for a node daemon with one store, but the suite runs hundreds of in-process runs, each on
its own ``tmp_path`` SQLite store. Measured: every such store keeps ~44,000 objects (~9 MB)
alive after its test, so the heap grew to 2.6 GB and pytest's closing ``gc.collect()`` passes
took over ten minutes after the summary. The stores' folders are gone with the test's
``tmp_path``; dropping them from the caches changes nothing a test checks (a store still in use
by a module fixture is rebuilt on its next call, on the same database).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator

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
