"""Read-only views of one node's state: what its console shows, as plain JSON-able dicts.

Nothing here writes, creates or locks a file; every view re-reads the disk, so a page shows
the state as it is now (the ledger summaries are kept up to date by reading only the lines
appended since the last view, since a ledger grows by hundreds of thousands of lines). A file that
cannot be read or does not have the expected shape becomes an ``error`` string in the view,
naming the file, never an exception that takes the page down. Ids that reach a view from a
URL are looked up among the ids the view itself listed; they are never joined to a path.

Where each view reads (under the node's ``[node] state_dir`` unless said otherwise):

* jobs: ``jobs/<id>/job.json`` (:mod:`fedacq.node.jobs`): status, progress, result;
* training curves and model quality: a succeeded ``run`` job's result at the lender (its
  ``history`` per round and the evaluation of :func:`fedacq.learn.run_report.evaluate`:
  per split AUC, KS and the decile table of a binary classifier, or the value by decile
  of a regression). Each such job is one *model version*. ROC, KS and gains curves are
  drawn at the decile cut points the evaluation kept (11 points per curve); the platform
  holds no labels, so it evaluates nothing and its console says so;
* lift over time: each succeeded ``measure`` job's ``jobs/<id>/work/report.json`` (the
  lender's report, :func:`fedacq.measure.report.measure`), and the measurements campaign
  cycles recorded (below);
* boost tables: the manifests (:func:`fedacq.activate.table.read_manifest`) under the boost
  service's table root, ``[console] boost_tables`` (the platform's ``fedacq boost-serve
  --tables``); their ``score`` column for score drift;
* the egress ledger: ``egress.jsonl`` and ``ingress.jsonl`` (:mod:`fedacq.link.ledger`);
* campaigns: the campaign state directory, ``[console] campaigns`` (default
  ``<state_dir>/campaigns``), in the layout below.

Campaign state layout (written by the campaign loop, read here; "required" keys must be
present, the others may be absent, and ``null`` is allowed where the type says so)::

    <campaigns>/
      <campaign>/                 the campaign's name, a fedacq.paths.NAME
        campaign.json             the campaign (below)
        cycles/
          <n>/                    the cycle number in decimal, zero-padded to at least 4 digits: 0001, 0002, ...
            cycle.json            the cycle (below)
            scores.npy            optional: this cycle's model version's scores of a fixed reference
                                  sample (1-D float, numpy .npy, read with allow_pickle=False), for drift

``campaign.json``, a JSON object; times are UNIX seconds::

    name           str          required: equal to the directory's name
    status         str          required: "running" | "paused" | "finished" | "stopped"
    status_by      str|null     the party whose operator set that status (the lender's changes
                                reach the platform's record through a ``campaign`` job)
    created        number       required: when the campaign started
    updated        number       required: the last change
    live_version   str|null     the model version whose boost table bidding uses now
    live_table     str|null     that boost table's version (its manifest's "version"); the boost
                                tables page marks that version live
    description    str          a line for people
    settings       object       flat key -> str|number|bool (schedule, gate thresholds, ...)

``cycle.json``, a JSON object::

    cycle          int          required: the cycle number, equal to the directory's, from 1
    started        number       required: when the cycle started
    outcome        str          required: "running" | "published" | "refused" | "rolled_back" | "failed"
                                  published: the version's boost table went live;
                                  refused: a gate failed, the version was never published;
                                  rolled_back: it was published, then withdrawn (e.g. negative lift);
                                  failed: a step failed
    reason         str|null     why; required (non-empty) for refused, rolled_back and failed
    finished       number|null  null while the cycle runs
    sim_day        int|null     the simulated day the cycle ran on (fedacq.sim); the lift plot's x axis
    version        str|null     the model version this cycle built (null if it built none)
    model_job      str|null     the node job id of its training (a ``run`` job), linked to its page
    update         str|null     "retrain" | "add_trees"
    gates          list|null    the quality gates in the order checked, each an object with
                                  name str, value number|null (null: not measured),
                                  op ">=" | "<=", threshold number, passed bool
    boost_table    str|null     the boost table version published for this version
    measurement    object|null  the latest lift measured while this version was live: time number
                                  (required), kpi str (required), relative {value, ci_low, ci_high}
                                  (required; T/C - 1 as fractions), layer str, job str|null,
                                  confidence number (e.g. 0.95), sim_day int|null (the simulated
                                  day it was taken), first_day / last_day int|null (the days it covers)
    attempts       list|null    each ``campaign_publish`` job of this cycle, oldest first: job
                                  str|null, time number|null, outcome str, table str|null, reason
                                  str|null (a failed publication is retried in the same cycle)
    measurements   list|null    every measurement of this version, oldest first, each as
                                  ``measurement`` except that relative may be null (an arm had too
                                  little data: listed, not plotted); the lift plot puts each at the
                                  day it was taken, one curve per version

Unknown keys are ignored (the loop may record more); a missing required key or a value of
the wrong type makes that file an error entry on the page, naming the file and the key.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from fedacq.console.stability import population_stability_index, reference_cuts, shares, verdict
from fedacq.paths import NAME

#: the largest JSON file a view reads (a job record with a large result is still far below).
MAX_JSON_BYTES = 16 << 20
#: the largest scores file read for drift (``scores.npy`` or a boost table's data file).
MAX_SCORES_BYTES = 512 << 20
#: how deep under the boost table root manifests are looked for (the service's CAMPAIGN/VERSION).
MAX_TABLE_DEPTH = 4
CAMPAIGN_STATUSES = ("running", "paused", "finished", "stopped")
OUTCOMES = ("running", "published", "refused", "rolled_back", "failed")
NEEDS_REASON = ("refused", "rolled_back", "failed")
UPDATES = ("retrain", "add_trees")
CYCLE_DIR = re.compile(r"^[0-9]{4,9}$")
#: history keys' split prefixes -> the split's name on the plots.
SPLITS = (("train_", "train"), ("valid_", "validation"), ("validation_", "validation"))


@dataclass(frozen=True)
class Sources:
    """Where a node's console reads: the node's config, reduced to what the views need."""

    party: str
    peer: str
    state_dir: Path
    boost_tables: Path | None = None
    campaigns: Path | None = None

    @property
    def campaigns_dir(self) -> Path:
        return self.campaigns or self.state_dir / "campaigns"


class ViewError(ValueError):
    """A file a view needed has the wrong shape (the message names the file)."""


def read_json(path: Path, what: str = "file") -> Any:
    """A JSON file of at most :data:`MAX_JSON_BYTES`; ViewError naming it otherwise."""
    try:
        size = path.stat().st_size
        if size > MAX_JSON_BYTES:
            raise ViewError(f"{path}: {size} bytes, more than the {MAX_JSON_BYTES} a {what} may have")
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ViewError(f"{path}: cannot read ({exc.strerror})") from None
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ViewError(f"{path}: not valid JSON ({exc})") from None


def utc(t: Any) -> str:
    """UNIX seconds as ``YYYY-MM-DD HH:MM:SS UTC``; "" for anything else."""
    if not _number(t):
        return ""
    return dt.datetime.fromtimestamp(float(t), dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and bool(np.isfinite(v))


def _listing(directory: Path) -> list[Path]:
    """Sub-directories of ``directory`` whose names are :data:`fedacq.paths.NAME` (none if it is absent)."""
    try:
        entries = sorted(directory.iterdir())
    except OSError:
        return []
    return [p for p in entries if NAME.match(p.name) and p.is_dir() and not p.is_symlink()]


class NodeState:
    """Every view of one node's state (see the module docstring for the sources)."""

    def __init__(self, sources: Sources) -> None:
        self.src = sources
        self._tallies: dict[str, LedgerTally] = {}
        self._lock = threading.Lock()  # the server's request threads share the tallies

    # -- jobs -------------------------------------------------------------------------------
    def _records(self) -> Iterator[tuple[str, dict[str, Any] | None, str | None]]:
        for d in _listing(self.src.state_dir / "jobs"):
            path = d / "job.json"
            if not path.is_file():
                continue
            try:
                record = read_json(path, "job record")
                if not isinstance(record, dict) or record.get("id") != d.name:
                    raise ViewError(f"{path}: not a job record of job {d.name}")
                yield d.name, record, None
            except ViewError as exc:
                yield d.name, None, str(exc)

    def jobs(self) -> list[dict[str, Any]]:
        """Every job of this node, newest first: id, protocol, status, progress, times, error."""
        out = []
        for job_id, record, error in self._records():
            if record is None:
                out.append({"id": job_id, "protocol": "", "status": "unreadable", "error": error,
                            "submitted": None, "progress": None})
                continue
            spec = record.get("spec") if isinstance(record.get("spec"), dict) else {}
            out.append({"id": job_id, "protocol": str(spec.get("protocol", "")),
                        "initiator": str(spec.get("initiator", "")), "attempt": spec.get("attempt", 0),
                        "status": str(record.get("status", "")), "submitted": record.get("submitted"),
                        "started": record.get("started"), "finished": record.get("finished"),
                        "error": record.get("error"), "progress": _progress(record.get("progress"))})
        out.sort(key=lambda j: (j["submitted"] if _number(j["submitted"]) else 0, j["id"]), reverse=True)
        return out

    def job(self, job_id: str) -> dict[str, Any] | None:
        """The job record of ``job_id`` if this node has that job (looked up, never joined to a path)."""
        for name, record, error in self._records():
            if name == job_id:
                return record if record is not None else {"id": name, "status": "unreadable", "error": error}
        return None

    def model_versions(self) -> list[dict[str, Any]]:
        """Succeeded ``run`` jobs that this node evaluated (the lender's), oldest first: each is a
        model version, with its headline metrics."""
        out = []
        for job_id, record, _ in self._records():
            spec = (record or {}).get("spec")
            result = (record or {}).get("result")
            if not isinstance(spec, dict) or spec.get("protocol") != "run" or record.get("status") != "succeeded" \
                    or not isinstance(result, dict) or not isinstance(result.get("train"), dict):
                continue
            split = "validation" if isinstance(result.get("validation"), dict) else "train"
            metrics = {k: v for k, v in result[split].items() if _number(v) and k not in ("rows", "positives")}
            out.append({"id": job_id, "finished": record.get("finished"), "objective": result.get("objective"),
                        "evaluated_on": split, "metrics": metrics,
                        "intersection_size": result.get("intersection_size")})
        out.sort(key=lambda v: (v["finished"] if _number(v["finished"]) else 0, v["id"]))
        return out

    def training(self, job_id: str) -> dict[str, Any]:
        """The training curves of a ``run`` job: per metric, its train and validation values per round."""
        record = self.job(job_id) or {}
        result = record.get("result")
        history = result.get("history") if isinstance(result, dict) else None
        if not isinstance(history, list) or not history:
            return {"curves": {}, "rounds": 0}
        return {"curves": curves(history), "rounds": len(history)}

    def quality(self, job_id: str) -> dict[str, Any]:
        """Model quality of a ``run`` job's version (module docstring): kind "binary" (ROC, KS,
        gains per split), "regression" (value by decile), "multiclass" or "none"."""
        record = self.job(job_id) or {}
        result = record.get("result")
        if not isinstance(result, dict) or not isinstance(result.get("train"), dict):
            return {"kind": "none"}
        splits = {s: result[s] for s in ("train", "validation") if isinstance(result.get(s), dict)}
        objective = str(result.get("objective", ""))
        if objective == "binary:logistic":
            out: dict[str, Any] = {"kind": "binary", "objective": objective, "splits": {}}
            for name, m in splits.items():
                try:
                    out["splits"][name] = binary_curves(m)
                except (ViewError, KeyError, TypeError, ValueError) as exc:
                    out["splits"][name] = {"error": f"job {job_id}, split {name}: {exc}"}
            return out
        if isinstance(next(iter(splits.values())).get("value_by_decile"), list):
            return {"kind": "regression", "objective": objective,
                    "splits": {n: {"deciles": m["value_by_decile"], "rmse": m.get("rmse"),
                                   "mean_label": m.get("mean_label"), "mean_prediction": m.get("mean_prediction")}
                               for n, m in splits.items() if isinstance(m.get("value_by_decile"), list)}}
        return {"kind": "multiclass" if "confusion" in next(iter(splits.values())) else "none",
                "objective": objective}

    # -- boost tables and scores ----------------------------------------------------------
    def boost_tables(self) -> dict[str, Any]:
        """Boost table versions under ``[console] boost_tables``, per campaign newest first, and which is live.

        Live: the version a campaign's state names (its ``live_table``), else what the boost
        service's start-up scan serves (the newest valid, unexpired manifest of the campaign).
        Only manifests are checked here (shape, expiry), not the data files' checksums: that is
        the service's work when it loads a table.
        """
        root = self.src.boost_tables
        if root is None:
            return {"configured": False, "tables": [], "errors": []}
        tables, errors = [], []
        for manifest_path in _manifests(root):
            try:
                m = _manifest(manifest_path.parent)
            except ValueError as exc:
                errors.append(str(exc))
                continue
            data_file = Path(m["data_file"]).name
            if not NAME.match(data_file) or ".." in data_file:
                errors.append(f"{manifest_path}: data_file {m['data_file']!r} is not a file name")
                continue
            tables.append({"id": str(manifest_path.parent.relative_to(root)), "campaign": m["campaign"],
                           "version": m["version"], "model_version": m["model_version"],
                           "created_at": m["created_at"], "expires_at": m["expires_at"], "rows": m["rows"],
                           "expired": _expired(m["expires_at"]), "layer": str(m["experiment"].get("layer", "")),
                           "tiers": _tier_summary(m["tiers"]), "default_boost": m["default_boost"],
                           "dir": manifest_path.parent, "data_file": data_file})
        tables.sort(key=lambda t: (t["campaign"], t["created_at"]), reverse=True)
        pinned = {c["live_table"] for c in self.campaigns()["campaigns"] if c.get("live_table")}
        for campaign in {t["campaign"] for t in tables}:
            mine = [t for t in tables if t["campaign"] == campaign]
            live = next((t for t in mine if t["version"] in pinned), None)
            how = "the campaign state names it"
            if live is None:
                live = next((t for t in mine if not t["expired"]), None)
                how = "the newest unexpired version (what the boost service's start-up scan serves)"
            for t in mine:
                t["live"] = t is live
                t["live_by"] = how if t is live else ""
        return {"configured": True, "root": str(root), "tables": tables, "errors": errors}

    def score_sets(self) -> list[dict[str, Any]]:
        """Score distributions this node holds, oldest first: boost table versions (their
        ``score`` column) and campaign cycles with a ``scores.npy``. Ids are ``table:<dir>`` and
        ``cycle:<campaign>/<n>``."""
        out = []
        for t in sorted(self.boost_tables()["tables"], key=lambda t: t["created_at"]):
            out.append({"id": f"table:{t['id']}", "label": f"{t['campaign']} {t['version']} "
                        f"(model {t['model_version']})", "path": t["dir"] / t["data_file"], "kind": "parquet"})
        for c in self.campaigns()["campaigns"]:
            for cy in self.campaign(c["name"]).get("cycles", []):
                scores = cy.get("scores_path")
                if scores is not None:
                    out.append({"id": f"cycle:{c['name']}/{cy['cycle']}",
                                "label": f"{c['name']} cycle {cy['cycle']} ({cy.get('version') or 'no version'})",
                                "path": scores, "kind": "npy"})
        return out

    def drift(self, reference: str | None = None, other: str | None = None, bins: int = 10) -> dict[str, Any]:
        """Score histograms of two score sets (ids of :meth:`score_sets`; default: the last two)
        on the reference's quantile cuts, and the PSI of the second against the first."""
        sets = self.score_sets()
        by_id = {s["id"]: s for s in sets}
        out: dict[str, Any] = {"sets": [{"id": s["id"], "label": s["label"]} for s in sets]}
        if len(sets) < 2 and (reference is None or other is None):
            return out
        ref = by_id.get(reference) if reference is not None else sets[-2]
        oth = by_id.get(other) if other is not None else sets[-1]
        if ref is None or oth is None:
            raise KeyError("no such score set")
        try:
            a, b = _load_scores(ref), _load_scores(oth)
            cuts = reference_cuts(a, bins)
            psi = population_stability_index(a, b, bins)
        except ValueError as exc:
            out["error"] = str(exc)
            return out
        out.update(reference=ref["id"], other=oth["id"], reference_label=ref["label"], other_label=oth["label"],
                   cuts=cuts.tolist(), reference_shares=shares(a, cuts).tolist(),
                   other_shares=shares(b, cuts).tolist(), psi=psi, verdict=verdict(psi),
                   rows=(int(a.size), int(b.size)))
        return out

    # -- measurement ----------------------------------------------------------------------
    def lift(self) -> dict[str, Any]:
        """Lift of treatment over control per KPI over time, with intervals: one series per
        (source, layer or campaign, KPI), points ``{time, value, ci_low, ci_high, job}``."""
        series: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
        errors: list[str] = []
        labels: dict[str, str] = {}
        confidence = None
        for job in reversed(self.jobs()):
            if job["protocol"] != "measure" or job["status"] != "succeeded":
                continue
            path = self.src.state_dir / "jobs" / job["id"] / "work" / "report.json"
            if not path.is_file():
                continue  # the platform's side of a measurement: it holds no lift
            try:
                report = read_json(path, "measurement report")
                confidence = report["settings"]["confidence"]
                for kpi, spec in report["kpis"].items():
                    labels[kpi] = str(spec.get("label", kpi))
                for layer, res in report["layers"].items():
                    for kpi, lift in res["lift"].items():
                        rel = lift.get("relative") if isinstance(lift, dict) else None
                        if isinstance(rel, dict) and all(_number(rel.get(k)) for k in ("value", "ci_low", "ci_high")):
                            series.setdefault(("measure job", str(layer), str(kpi)), []).append(
                                {"time": job["finished"], "value": rel["value"], "ci_low": rel["ci_low"],
                                 "ci_high": rel["ci_high"], "job": job["id"]})
            except (ViewError, KeyError, TypeError, AttributeError) as exc:
                errors.append(f"{path}: not a measurement report ({exc})")
        for c in self.campaigns()["campaigns"]:
            for cy in self.campaign(c["name"]).get("cycles", []):
                for m in cy.get("measurements") or []:
                    if m["relative"] is None:
                        continue  # too little data in an arm: in the cycle's record, not on the plot
                    series.setdefault(("campaign", c["name"], m["kpi"]), []).append(
                        {"time": m["time"], **{k: m["relative"][k] for k in ("value", "ci_low", "ci_high")},
                         "job": m["job"], "cycle": cy["cycle"], "version": cy.get("version"),
                         "sim_day": m["sim_day"], "first_day": m["first_day"], "last_day": m["last_day"]})
                    confidence = confidence or m["confidence"]
        return {"series": [{"source": s, "scope": scope, "kpi": kpi, "label": labels.get(kpi, kpi),
                            "points": sorted(points, key=lambda p: p["time"] or 0)}
                           for (s, scope, kpi), points in sorted(series.items())],
                "confidence": confidence, "errors": errors}

    # -- the ledger -----------------------------------------------------------------------
    def ledger(self, direction: str = "egress") -> dict[str, Any]:
        """The ledger's summary: per (message type, peer) the count and bytes, per job the same,
        and the totals. ``direction`` is "egress" (what left the premises) or "ingress".

        A ledger only grows, so each call reads only the lines appended since the last one
        (:class:`LedgerTally`); a file that shrank was replaced and is read again from the start.
        """
        if direction not in ("egress", "ingress"):
            raise ValueError(f"no ledger {direction!r}")
        path = self.src.state_dir / f"{direction}.jsonl"
        if not path.is_file():
            return LedgerTally(path).summary(present=False)
        with self._lock:
            tally = self._tallies.get(direction)
            if tally is None or not tally.feed():
                tally = self._tallies[direction] = LedgerTally(path)
                tally.feed()
            return tally.summary()

    # -- campaigns ------------------------------------------------------------------------
    def campaigns(self) -> dict[str, Any]:
        """Every campaign in the campaign state directory, with its cycle counts by outcome."""
        out, errors = [], []
        for d in _listing(self.src.campaigns_dir):
            try:
                doc = _campaign_doc(d)
            except ViewError as exc:
                errors.append(str(exc))
                continue
            cycles = self._cycles(d)
            counts = {o: sum(1 for c in cycles if c.get("outcome") == o) for o in OUTCOMES}
            out.append({**doc, "cycles": len(cycles), "outcomes": counts,
                        "bad_cycles": sum(1 for c in cycles if "error" in c)})
        return {"campaigns": out, "errors": errors, "dir": str(self.src.campaigns_dir)}

    def campaign(self, name: str) -> dict[str, Any]:
        """One campaign and its cycles (oldest first); KeyError if there is no such campaign."""
        for d in _listing(self.src.campaigns_dir):
            if d.name == name:
                try:
                    doc = _campaign_doc(d)
                except ViewError as exc:
                    return {"name": name, "error": str(exc), "cycles": []}
                return {**doc, "cycles": self._cycles(d)}
        raise KeyError(name)

    def _cycles(self, campaign_dir: Path) -> list[dict[str, Any]]:
        out = []
        try:
            entries = sorted((campaign_dir / "cycles").iterdir())
        except OSError:
            return []
        for d in entries:
            if not CYCLE_DIR.match(d.name) or not d.is_dir() or d.is_symlink():
                continue
            try:
                cycle = _cycle_doc(d)
            except ViewError as exc:
                out.append({"cycle": int(d.name), "error": str(exc)})
                continue
            scores = d / "scores.npy"
            cycle["scores_path"] = scores if scores.is_file() and not scores.is_symlink() else None
            out.append(cycle)
        return out

    # -- overview -------------------------------------------------------------------------
    def overview(self) -> dict[str, Any]:
        jobs = self.jobs()
        by_status: dict[str, int] = {}
        for j in jobs:
            by_status[j["status"]] = by_status.get(j["status"], 0) + 1
        tables = self.boost_tables()
        egress = self.ledger("egress")
        return {"party": self.src.party, "peer": self.src.peer, "jobs": len(jobs), "by_status": by_status,
                "running": [j for j in jobs if j["status"] in ("submitted", "running")],
                "model_versions": len(self.model_versions()),
                "boost_tables": len(tables["tables"]), "live": [t for t in tables["tables"] if t.get("live")],
                "campaigns": self.campaigns()["campaigns"],
                "egress_messages": egress["messages"], "egress_bytes": egress["bytes"]}


# -- helpers ----------------------------------------------------------------------------------

def curves(history: list[Any]) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """Per metric, the (round, value) points of each split, from a training history: keys
    ``train_<metric>``, ``valid_<metric>`` or ``validation_<metric>`` (rounds from 1)."""
    out: dict[str, dict[str, list[tuple[int, float]]]] = {}
    for i, entry in enumerate(history):
        if not isinstance(entry, dict):
            continue
        for key, value in entry.items():
            if not _number(value):
                continue
            for prefix, split in SPLITS:
                if key.startswith(prefix):
                    out.setdefault(key[len(prefix):], {}).setdefault(split, []).append((i + 1, float(value)))
                    break
    return out


def binary_curves(metrics: dict[str, Any]) -> dict[str, Any]:
    """ROC, KS and gains points of one split from its decile table (``metrics.json``'s
    ``deciles``: rows and positives per decile, best scores first).

    At the cut after decile ``k`` the top ``k`` deciles are "selected": TPR = positives
    selected / all positives, FPR = negatives selected / all negatives, gain = TPR, share =
    rows selected / all rows; KS is the largest TPR - FPR over the cuts (the evaluation's exact
    KS, over every score, is reported beside it).
    """
    deciles = metrics["deciles"]
    if not isinstance(deciles, list) or not deciles:
        raise ViewError("no decile table")
    rows = np.array([float(d["rows"]) for d in deciles])
    pos = np.array([float(d["positives"]) for d in deciles])
    n_pos, n_neg = pos.sum(), rows.sum() - pos.sum()
    if n_pos <= 0 or n_neg <= 0:
        raise ViewError("the split has only one class")
    tpr = np.r_[0.0, np.cumsum(pos) / n_pos]
    fpr = np.r_[0.0, np.cumsum(rows - pos) / n_neg]
    share = np.r_[0.0, np.cumsum(rows) / rows.sum()]
    return {"auc": metrics.get("auc"), "ks": metrics.get("ks"), "rows": int(rows.sum()),
            "positives": int(n_pos), "fpr": fpr.tolist(), "tpr": tpr.tolist(), "share": share.tolist(),
            "ks_at_cuts": float(np.max(tpr - fpr)),
            "lift": [float(d.get("lift", 0.0)) for d in deciles]}


class LedgerTally:
    """Running counts and bytes of one ledger file, per (message type, peer) and per job.

    :meth:`feed` reads the complete lines appended since the last call; lines that are not
    ledger entries are counted as unreadable, never fatal. The file is only read.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.by_type: dict[tuple[str, str], list[int]] = {}
        self.by_job: dict[str, list[int]] = {}
        self.messages = self.bytes = self.bad = 0
        self.first: float | None = None
        self.last: float | None = None

    def feed(self) -> bool:
        """Read what was appended; False if the file is now shorter than what was read (replaced)."""
        try:
            with self.path.open("rb") as fh:
                fh.seek(0, 2)
                if fh.tell() < self.offset:
                    return False
                fh.seek(self.offset)
                for line in fh:
                    if not line.endswith(b"\n"):
                        break  # a line being written: read it next time, whole
                    self.offset += len(line)
                    self._line(line)
        except OSError:
            return False
        return True

    def _line(self, line: bytes) -> None:
        if not line.strip():
            return
        try:
            e = json.loads(line)
            nbytes = int(e["bytes"])
            kind, peer, job, t = str(e["type"]), str(e["peer"]), str(e["job"]), e.get("time")
        except (ValueError, KeyError, TypeError):
            self.bad += 1
            return
        self.messages += 1
        self.bytes += nbytes
        for table, key in ((self.by_type, (kind, peer)), (self.by_job, job)):
            acc = table.setdefault(key, [0, 0])  # type: ignore[attr-defined]
            acc[0] += 1
            acc[1] += nbytes
        if _number(t):
            self.first = t if self.first is None else min(self.first, t)
            self.last = t if self.last is None else max(self.last, t)

    def summary(self, present: bool = True) -> dict[str, Any]:
        return {"present": present, "messages": self.messages, "bytes": self.bytes, "first": self.first,
                "last": self.last,
                "by_type": [{"type": k[0], "peer": k[1], "count": v[0], "bytes": v[1]}
                            for k, v in sorted(self.by_type.items(), key=lambda kv: -kv[1][1])],
                "by_job": [{"job": k, "count": v[0], "bytes": v[1]}
                           for k, v in sorted(self.by_job.items(), key=lambda kv: -kv[1][1])],
                "errors": [f"{self.path}: {self.bad} line(s) are not ledger entries"] if self.bad else []}


def _progress(p: Any) -> dict[str, Any] | None:
    if not isinstance(p, dict):
        return None
    done, total = p.get("done"), p.get("total")
    fraction = float(done) / float(total) if _number(done) and _number(total) and total > 0 else None
    return {"step": str(p.get("step", "")), "done": done if _number(done) else None,
            "total": total if _number(total) else None,
            "fraction": None if fraction is None else max(0.0, min(1.0, fraction)),
            "eta_seconds": p.get("eta_seconds") if _number(p.get("eta_seconds")) else None}


def _manifests(root: Path) -> list[Path]:
    """``manifest.json`` files under ``root`` (up to :data:`MAX_TABLE_DEPTH` levels), inside it."""
    found = []
    base = root.resolve()
    for depth in range(1, MAX_TABLE_DEPTH + 1):
        for path in sorted(root.glob("/".join(["*"] * depth) + "/manifest.json")):
            if path.resolve().is_relative_to(base) and not path.is_symlink():
                found.append(path)
    return found


def _manifest(directory: Path) -> dict[str, Any]:
    from fedacq.activate.table import read_manifest

    return read_manifest(directory)


def _expired(expires_at: str) -> bool:
    from fedacq.activate.table import parse_time

    try:
        return parse_time(expires_at) <= dt.datetime.now(dt.timezone.utc)
    except ValueError:
        return True


def _tier_summary(tiers: dict[str, Any]) -> str:
    boosts = tiers.get("tier_boosts") or tiers.get("boosts")
    if isinstance(boosts, list):
        return ", ".join(f"{b:g}" if _number(b) else str(b) for b in boosts)
    return ""


def _load_scores(score_set: dict[str, Any]) -> np.ndarray:
    path: Path = score_set["path"]
    try:
        if path.stat().st_size > MAX_SCORES_BYTES:
            raise ValueError(f"{path}: larger than the {MAX_SCORES_BYTES} bytes the console reads")
        if score_set["kind"] == "npy":
            scores = np.load(path, allow_pickle=False)
        else:
            import pyarrow.parquet as pq

            scores = pq.read_table(path, columns=["score"]).column("score").to_numpy()
    except (OSError, KeyError) as exc:
        raise ValueError(f"{path}: cannot read its scores ({exc})") from None
    scores = np.asarray(scores)
    if scores.dtype.kind not in "fiu":
        raise ValueError(f"{path}: scores must be numbers, not {scores.dtype}")
    scores = scores.astype(np.float64).reshape(-1)
    return scores[np.isfinite(scores)]


def _typed(doc: dict[str, Any], path: Path, key: str, kinds: tuple[type, ...], optional: bool = False) -> Any:
    if key not in doc:
        if optional:
            return None
        raise ViewError(f"{path}: lacks {key!r}")
    value = doc[key]
    if value is None and optional:
        return None
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        raise ViewError(f"{path}: {key!r} is {type(value).__name__}, expected {'/'.join(k.__name__ for k in kinds)}")
    return value


def _campaign_doc(d: Path) -> dict[str, Any]:
    path = d / "campaign.json"
    doc = read_json(path, "campaign file")
    if not isinstance(doc, dict):
        raise ViewError(f"{path}: not a JSON object")
    if doc.get("name") != d.name:
        raise ViewError(f"{path}: name {doc.get('name')!r} differs from its directory {d.name!r}")
    status = _typed(doc, path, "status", (str,))
    if status not in CAMPAIGN_STATUSES:
        raise ViewError(f"{path}: status {status!r} is not one of {list(CAMPAIGN_STATUSES)}")
    settings = _typed(doc, path, "settings", (dict,), optional=True) or {}
    return {"name": d.name, "status": status, "status_by": _typed(doc, path, "status_by", (str,), optional=True),
            "created": _typed(doc, path, "created", (int, float)),
            "updated": _typed(doc, path, "updated", (int, float)),
            "live_version": _typed(doc, path, "live_version", (str,), optional=True),
            "live_table": _typed(doc, path, "live_table", (str,), optional=True),
            "description": _typed(doc, path, "description", (str,), optional=True) or "",
            "settings": {str(k): v for k, v in settings.items() if isinstance(v, (str, int, float, bool))}}


def _cycle_doc(d: Path) -> dict[str, Any]:
    path = d / "cycle.json"
    doc = read_json(path, "cycle file")
    if not isinstance(doc, dict):
        raise ViewError(f"{path}: not a JSON object")
    number = _typed(doc, path, "cycle", (int,))
    if number != int(d.name):
        raise ViewError(f"{path}: cycle {number} in directory {d.name}")
    outcome = _typed(doc, path, "outcome", (str,))
    if outcome not in OUTCOMES:
        raise ViewError(f"{path}: outcome {outcome!r} is not one of {list(OUTCOMES)}")
    reason = _typed(doc, path, "reason", (str,), optional=True)
    if outcome in NEEDS_REASON and not reason:
        raise ViewError(f"{path}: outcome {outcome!r} needs a reason")
    gates = []
    for i, g in enumerate(_typed(doc, path, "gates", (list,), optional=True) or []):
        where = f"{path}: gates[{i}]"
        if not isinstance(g, dict) or not isinstance(g.get("name"), str) or not isinstance(g.get("passed"), bool) \
                or g.get("op") not in (">=", "<=") or not _number(g.get("threshold")) \
                or not (g.get("value") is None or _number(g.get("value"))):
            raise ViewError(f"{where}: expected name, value, op ('>=' or '<='), threshold, passed")
        gates.append({"name": g["name"], "value": g.get("value"), "op": g["op"], "threshold": g["threshold"],
                      "passed": g["passed"]})
    update = _typed(doc, path, "update", (str,), optional=True)
    if update not in (None, *UPDATES):
        raise ViewError(f"{path}: update {update!r} is not one of {list(UPDATES)}")
    measurement = _typed(doc, path, "measurement", (dict,), optional=True)
    if measurement is not None:
        measurement = _measurement(measurement, f"{path}: measurement", relative_required=True)
    listed = _typed(doc, path, "measurements", (list,), optional=True)
    if listed is None:  # a record from before the list: its latest measurement is all there is
        measurements = [measurement] if measurement is not None else []
    else:
        measurements = [_measurement(m, f"{path}: measurements[{i}]", relative_required=False)
                        for i, m in enumerate(listed)]
    attempts = []
    for i, a in enumerate(_typed(doc, path, "attempts", (list,), optional=True) or []):
        if not isinstance(a, dict) or not isinstance(a.get("outcome"), str) \
                or not all(a.get(k) is None or isinstance(a.get(k), str) for k in ("job", "table", "reason")):
            raise ViewError(f"{path}: attempts[{i}] needs an outcome (job, table and reason text or null)")
        attempts.append({"job": a.get("job"), "time": a.get("time") if _number(a.get("time")) else None,
                         "outcome": a["outcome"], "table": a.get("table"), "reason": a.get("reason")})
    return {"cycle": number, "started": _typed(doc, path, "started", (int, float)),
            "finished": _typed(doc, path, "finished", (int, float), optional=True),
            "sim_day": _typed(doc, path, "sim_day", (int,), optional=True),
            "version": _typed(doc, path, "version", (str,), optional=True),
            "model_job": _typed(doc, path, "model_job", (str,), optional=True),
            "update": update,
            "gates": gates, "outcome": outcome, "reason": reason,
            "boost_table": _typed(doc, path, "boost_table", (str,), optional=True),
            "measurement": measurement, "measurements": measurements, "attempts": attempts}


def _measurement(m: Any, where: str, relative_required: bool) -> dict[str, Any]:
    """One recorded measurement, checked (the keys the console uses; the others are dropped)."""
    rel = m.get("relative") if isinstance(m, dict) else None
    if not isinstance(m, dict) or not _number(m.get("time")) or not isinstance(m.get("kpi"), str) \
            or not ((rel is None and not relative_required)
                    or (isinstance(rel, dict) and all(_number(rel.get(k)) for k in ("value", "ci_low", "ci_high")))):
        raise ViewError(f"{where} needs time, kpi and relative {{value, ci_low, ci_high}}")
    days = {}
    for key in ("sim_day", "first_day", "last_day"):
        day = m.get(key)
        if day is not None and (not isinstance(day, int) or isinstance(day, bool)):
            raise ViewError(f"{where}: {key} must be a whole day or null")
        days[key] = day
    job, confidence = m.get("job"), m.get("confidence")
    return {"time": m["time"], "kpi": m["kpi"], "layer": m.get("layer") if isinstance(m.get("layer"), str) else None,
            "job": job if isinstance(job, str) else None, "confidence": confidence if _number(confidence) else None,
            "relative": {k: rel[k] for k in ("value", "ci_low", "ci_high")} if rel is not None else None, **days}
