"""The platform's side of the estimators: a server of its features, and two ways to reach it.

:class:`PlatformPeer` is the platform's counterpart of the estimators
(:mod:`fedacq.learn.estimator_base`): it holds the platform's features keyed by
the joint user id, answers one request per link (fit a model's platform part, or
answer a prediction with a model it holds), and keeps the model parts it fitted
under ids it chose. Everything a request asks is checked against this party's own
settings first (the models it serves, its minimum key size through the role
classes, the rows it holds); a request it cannot serve is refused with
``est.refuse`` and changes nothing.

How the lender reaches it:

* :class:`LocalPlatform` runs it in a thread of this process over a memory link,
  so a notebook fits with one call. It is a handle: deep copies (what
  ``sklearn.base.clone`` makes of parameters) are the same handle, so clones share
  the platform and its user base is never copied.
* :class:`GrpcPlatform` reaches a platform on another premise: a link over mutual
  TLS (:mod:`fedacq.link.grpc_link`) per request, announced as a job the platform
  accepts through :meth:`PlatformPeer.serve_grpc`.
"""

from __future__ import annotations

import json
import secrets
import threading
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from fedacq.crypto.paillier import MIN_KEY_BITS
from fedacq.learn.estimator_base import ACTIONS, MODEL_ID, MODELS, check_joint_index
from fedacq.link.link import Link
from fedacq.link.message import Message

PLATFORM_FILE = "platform_model.json"
PLATFORM_FORMAT = "fedacq.platform_model/1"
#: the job-id prefix of an estimator request over gRPC
JOB_PREFIX = "estimator-"


def _role_class(model: str) -> Any:
    """The platform role class of ``model`` (imported when asked: split NN needs torch)."""
    if model == "secureboost":
        from fedacq.learn.secureboost import SecureBoostPlatform
        return SecureBoostPlatform
    if model == "hetero_lr":
        from fedacq.learn.hetero_lr import HeteroLRPlatform
        return HeteroLRPlatform
    from fedacq.learn.splitnn import SplitNNPlatform
    return SplitNNPlatform


class PlatformPeer:
    """The platform's features, served to the lender's estimators (see the module docstring).

    ``features``: a pandas DataFrame of numeric columns indexed by the joint user id
    (integers; a positional request takes its rows in this frame's order), or ``None`` for a platform without features (the lender's model then
    uses its own only; useful to test the estimator contract). ``models``: the model
    kinds this party serves. ``min_key_bits``: the smallest HE key it accepts
    from the lender (below 2048 only for tests with insecure test keys);
    ``schemes``: the additive HE schemes it accepts (a node's ``[policy] schemes``:
    ``("paillier", "ou")`` lets a lender's ``scheme="ou"`` SecureBoost fit; OU is opt-in).
    """

    def __init__(self, features: Any = None, *, models: tuple[str, ...] = MODELS,
                 min_key_bits: int = MIN_KEY_BITS, schemes: Sequence[str] = ("paillier",),
                 n_jobs: int | None = None) -> None:
        from fedacq.crypto.scheme import SCHEMES

        unknown = set(models) - set(MODELS)
        if unknown:
            raise ValueError(f"models: unknown {sorted(unknown)}; known: {', '.join(MODELS)}")
        if isinstance(schemes, str) or not schemes or set(schemes) - set(SCHEMES):
            raise ValueError(f"schemes: {schemes!r}, expected a non-empty list of {sorted(SCHEMES)}")
        self.models = tuple(models)
        self.min_key_bits = int(min_key_bits)
        self.schemes = tuple(schemes)
        self.n_jobs = n_jobs
        if features is None:
            self._X, self._index = None, None
        else:
            if not hasattr(features, "columns"):
                raise ValueError("platform features must be a pandas DataFrame indexed by the joint user id")
            check_joint_index(features.index, "platform features")
            bad = [c for c in features.columns if features[c].dtype.kind not in "biuf"]
            if bad:
                raise ValueError(f"platform features: non-numeric column(s) {bad[:5]}")
            self._X = features.to_numpy(dtype=np.float64)
            self._index = features.index
        self._models: dict[str, tuple[str, Any]] = {}
        self._lock = threading.Lock()

    @property
    def n_features(self) -> int:
        return 0 if self._X is None else self._X.shape[1]

    def _rows(self, ids: np.ndarray, positional: bool, what: str) -> np.ndarray:
        """This party's features for the requested rows, in the requested order; ValueError to refuse."""
        if self._X is None:
            return np.zeros((len(ids), 0))
        if positional:
            if len(ids) != len(self._X) or not np.array_equal(ids, np.arange(len(ids))):
                raise ValueError(f"{what}: a numpy X of {len(ids)} rows cannot be aligned with this platform's "
                                 f"{len(self._X)} users; pass a pandas DataFrame indexed by the joint user id")
            return self._X
        at = self._index.get_indexer(ids)
        missing = int(np.sum(at < 0))
        if missing:
            raise ValueError(f"{what}: {missing} of {len(ids)} user ids are not among this platform's users")
        return self._X[at]

    # -- serving ------------------------------------------------------------------------
    def serve(self, link: Link) -> str | None:
        """Answer one request on ``link``; the model id served, or None when refused."""
        req = link.recv("est.request")
        h = req.header
        try:
            model, action, model_id = h["model"], h["action"], h["model_id"]
            if model not in self.models:
                raise ValueError(f"model {model[:40]!r} is not served here (serves {', '.join(self.models)})")
            if action not in ACTIONS:
                raise ValueError(f"unknown action {action[:40]!r}")
            X = self._rows(req.parts["rows"], h["positional"], "rows")
            eval_ids = req.parts.get("eval_rows")
            Xe = None if eval_ids is None else self._rows(eval_ids, h["positional"], "eval_rows")
            if action == "fit":
                if model_id:
                    raise ValueError("a fit request names no model id (the platform chooses it)")
                role = _role_class(model)(**self._role_kwargs(model))
            else:
                with self._lock:
                    held = self._models.get(model_id)
                if held is None or held[0] != model:
                    raise ValueError(f"no {model} model with id {model_id[:64]!r} here")
                role = held[1]
        except ValueError as exc:
            link.send(Message("est.refuse", {"reason": str(exc)}, step="refuse"))
            return None
        if action == "fit":
            model_id = secrets.token_hex(16)
            link.send(Message("est.accept", {"model_id": model_id}, step="accept"))
            role.fit(link, X, eval_X=Xe)
            with self._lock:
                self._models[model_id] = (model, role)
        else:
            link.send(Message("est.accept", {"model_id": model_id}, step="accept"))
            role.serve_predict(link, X)
        return model_id

    def _role_kwargs(self, model: str) -> dict[str, Any]:
        if model == "splitnn":
            return {}
        return {"n_jobs": self.n_jobs, "min_key_bits": self.min_key_bits, "schemes": self.schemes}

    def model_ids(self) -> list[str]:
        with self._lock:
            return sorted(self._models)

    def forget(self, model_id: str) -> None:
        """Drop a model part this party holds (GridSearchCV leaves one per fit)."""
        with self._lock:
            self._models.pop(model_id, None)

    # -- files --------------------------------------------------------------------------
    def save_model(self, model_id: str, directory: str | Path) -> Path:
        """The platform's part of model ``model_id`` (its role's files) and its id."""
        with self._lock:
            held = self._models.get(model_id)
        if held is None:
            raise KeyError(f"no model with id {model_id!r} here")
        path = Path(directory)
        held[1].save(path)
        out = path / PLATFORM_FILE
        out.write_text(json.dumps({"format": PLATFORM_FORMAT, "model": held[0], "model_id": model_id}))
        return out

    def load_model(self, directory: str | Path) -> str:
        """Hold again a part written by :meth:`save_model`; returns its model id."""
        path = Path(directory)
        doc = json.loads((path / PLATFORM_FILE).read_text())
        if doc.get("format") != PLATFORM_FORMAT or doc.get("model") not in MODELS or \
                not MODEL_ID.fullmatch(str(doc.get("model_id"))):
            raise ValueError(f"{path / PLATFORM_FILE}: not a fedacq platform model")
        kwargs = {} if doc["model"] == "splitnn" else {"n_jobs": self.n_jobs}
        role = _role_class(doc["model"]).load(path, **kwargs)
        with self._lock:
            self._models[doc["model_id"]] = (doc["model"], role)
        return doc["model_id"]

    def serve_grpc(self, tls: Any, listen: str, lender_address: str,
                   on_error: Callable[[BaseException], Any] | None = None) -> Any:
        """Serve the lender's estimators over mutual TLS; returns the started endpoint (``stop()`` it).

        Each estimator call announces a job ``estimator-<hex>``; this party accepts
        such a job and serves its link in a thread.
        """
        from fedacq.link.grpc_link import PeerEndpoint

        endpoint: Any = None

        def run_job(job: str, link: Link) -> None:
            try:
                self.serve(link)
            except BaseException as exc:  # noqa: BLE001 - a failed request must not stop the server
                if on_error is not None:
                    on_error(exc)
            finally:
                endpoint.release(job)

        def on_propose(job_json: str) -> tuple[bool, str]:
            try:
                job = json.loads(job_json)["job"]
            except (ValueError, KeyError, TypeError):
                return False, "not an estimator job"
            if not (isinstance(job, str) and job.startswith(JOB_PREFIX)
                    and MODEL_ID.fullmatch(job[len(JOB_PREFIX):])):
                return False, "not an estimator job"
            # the job's inbox opens before the lender hears "accepted": its first message has somewhere to go
            link = endpoint.link(job)
            threading.Thread(target=run_job, args=(job, link), daemon=True, name=f"fedacq-{job}").start()
            return True, ""

        endpoint = PeerEndpoint("platform", "lender", tls, listen, on_propose=on_propose)
        endpoint.start()
        endpoint.connect(lender_address)
        return endpoint

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        del state["_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()


class LocalPlatform:
    """The platform's side on this machine: a thread and a memory link per estimator call.

    ``LocalPlatform(platform_features_df)`` with the features indexed by the joint
    user id; ``LocalPlatform()`` for a platform without features. Deep copies are
    the same handle (``clone`` shares the platform, never copies its user base);
    pickling copies it, with the model parts it holds.
    """

    def __init__(self, features: Any = None, *, min_key_bits: int = MIN_KEY_BITS,
                 schemes: Sequence[str] = ("paillier",), n_jobs: int | None = None) -> None:
        self.server = PlatformPeer(features, min_key_bits=min_key_bits, schemes=schemes, n_jobs=n_jobs)

    def run(self, lender_side: Callable[[Link], Any]) -> Any:
        """``lender_side(link)`` against this platform serving one request; its result."""
        from fedacq.link.memory import memory_pair, run_parties

        lender_link, platform_link = memory_pair("lender", "platform", job=JOB_PREFIX + secrets.token_hex(8))
        return run_parties((lender_side, lender_link), (self.server.serve, platform_link))[0]

    def save_model(self, model_id: str, directory: str | Path) -> Path:
        return self.server.save_model(model_id, directory)

    def load_model(self, directory: str | Path) -> str:
        return self.server.load_model(directory)

    def __deepcopy__(self, memo: dict) -> "LocalPlatform":
        return self

    def __repr__(self) -> str:
        rows = "no features" if self.server._X is None else f"{self.server._X.shape[0]} users, " \
                                                               f"{self.server.n_features} features"
        return f"LocalPlatform({rows})"


class GrpcPlatform:
    """A platform on another premise, over mutual TLS: a link configuration for the estimators.

    ``tls``: the lender's :class:`fedacq.crypto.tls.TlsFiles`; ``listen``: where the
    lender's own link server listens (the platform sends its replies there, as
    between nodes); ``platform_address``: the platform's server. Each call opens the
    endpoint, announces one job, runs it and closes; deep copies are the same
    configuration.
    """

    def __init__(self, tls: Any, listen: str, platform_address: str, timeout: float = 600.0) -> None:
        self.tls = tls
        self.listen = listen
        self.platform_address = platform_address
        self.timeout = timeout

    def run(self, lender_side: Callable[[Link], Any]) -> Any:
        from fedacq.link.grpc_link import PeerEndpoint
        from fedacq.link.link import LinkError

        job = JOB_PREFIX + secrets.token_hex(16)
        endpoint = PeerEndpoint("lender", "platform", self.tls, self.listen)
        endpoint.start()
        try:
            client = endpoint.connect(self.platform_address)
            link = endpoint.link(job)
            decision = client.propose(json.dumps({"job": job}), timeout=self.timeout)
            if not decision.accepted:
                raise LinkError(f"the platform refused estimator job {job}: {decision.reason}")
            return lender_side(link)
        finally:
            endpoint.release(job)
            endpoint.stop()

    def __deepcopy__(self, memo: dict) -> "GrpcPlatform":
        return self

    def __repr__(self) -> str:
        return f"GrpcPlatform({self.platform_address!r})"
