"""Checkpoints of the ``run`` job, in one process: cut the link at any message, resume, same model.

Both parties run :func:`fedacq.learn.run.party_job` in threads over memory links
with a checkpoint folder each (as a node gives them). A cut ends both sides'
link at the N-th message of the conversation, as a killed node ends its
peer's; the next attempt resumes with ``resume=True`` from the same folders.
The model files must equal those of a run trained without interruption from
the same PSI result: PSI's shared row order is random per PSI run, so the
reference starts from the final PSI checkpoint of both parties (a copy), and
trains from there. The real node processes, SIGKILL and the ledgers are in
``test_kill_resume.py``.

Keys are 512 bits with the explicit test-only flag: what is checked is the
bookkeeping around the protocol, and the ciphertexts' size changes none of it.
"""

from __future__ import annotations

import dataclasses
import shutil
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fedacq.learn.run import LENDER, PLATFORM, RunConfig, load_table, model_module, party_job
from fedacq.learn.run_checkpoints import CHECKPOINTS_MESSAGE, RunCheckpoints, _parse_held
from fedacq.link.link import LinkError
from fedacq.link.memory import MemoryLink, memory_pair, run_parties
from fedacq.link.message import Message
from fedacq.node.checkpoint import Checkpoints

GUEST = "/work/shared/datasets/fate/default_credit_hetero_guest.csv"
HOST = "/work/shared/datasets/fate/default_credit_hetero_host.csv"
PARAMS = {"n_estimators": 4, "max_depth": 2, "max_bin": 16, "subsample": 0.8, "colsample_bytree": 0.8,
          "early_stopping_rounds": 3}


@pytest.fixture(scope="module")
def tables(tmp_path_factory):
    d = tmp_path_factory.mktemp("ckpt_inputs")
    pd.read_csv(GUEST, nrows=500).to_csv(d / "lender.csv", index=False)
    pd.read_csv(HOST, nrows=600).iloc[100:].sample(frac=1.0, random_state=1).to_csv(d / "platform.csv",
                                                                                       index=False)
    return {LENDER: load_table(d / "lender.csv", "id", "y", party=LENDER),
            PLATFORM: load_table(d / "platform.csv", "id", party=PLATFORM)}


class Cut:
    """Ends both links at the ``at``-th message sent on the pair (None: never)."""

    def __init__(self, at: int | None) -> None:
        self.at, self.sent, self.event = at, 0, threading.Event()
        self._lock = threading.Lock()

    def count(self) -> None:
        with self._lock:
            self.sent += 1
            if self.at is not None and self.sent >= self.at:
                self.event.set()
        if self.event.is_set():
            raise LinkError("cut: the peer's node is gone")


class CutLink(MemoryLink):
    def __init__(self, link: MemoryLink, cut: Cut) -> None:
        super().__init__(link.party, link.peer, link._inbox, link._outbox, job=link.job)
        self.cut = cut

    def _transmit(self, seq: int, msg: Message) -> None:
        self.cut.count()
        super()._transmit(seq, msg)

    def _receive(self, timeout):
        while not self.cut.event.is_set():
            try:
                return super()._receive(0.05)
            except LinkError:
                continue
        raise LinkError("cut: the peer's node is gone")


def attempt(tables, root: Path, out: Path, resume: bool, cut_at: int | None = None,
            model: str = "secureboost", model_params: dict = PARAMS, tracking: Path | None = None) -> dict | None:
    """One attempt of the job at both parties; None if the cut ended it. ``tracking``: an MLflow store per
    party under it, the same for every attempt (a new store per attempt costs seconds on a loaded machine;
    one store for both parties would have their two threads write one SQLite file at once, which a party's
    node never does and which, under load, can outlast SQLite's lock timeout)."""
    cfg = RunConfig(lender_path=tables[LENDER].path, platform_path=tables[PLATFORM].path, id_column="id",
                    label_column="y", out_dir=out, model=model, params=model_params, key_bits=512,
                    insecure_test_key=True, min_intersection=10, validation_fraction=0.25, seed=7, progress=False)
    cfgs = {party: cfg if tracking is None else dataclasses.replace(cfg, tracking_dir=str(tracking / party))
            for party in (LENDER, PLATFORM)}
    params = model_module(model).resolve_params(dict(model_params))
    cut = Cut(cut_at)
    links = [CutLink(link, cut) for link in memory_pair(LENDER, PLATFORM, job="j")]
    steps: dict[str, list] = {LENDER: [], PLATFORM: []}
    calls = [(party_job, party, link, tables[party], cfgs[party], params, None, Checkpoints(root / party), resume,
              lambda step, done, total=None, p=party: steps[p].append((step, done, total)))
             for party, link in zip((LENDER, PLATFORM), links)]
    results: dict[int, object] = {}

    def run(i: int) -> None:
        try:
            results[i] = calls[i][0](*calls[i][1:])
        except Exception as exc:  # noqa: BLE001 - a cut ends both sides with whatever their step raises
            results[i] = exc
            cut.event.set()
    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:  # both sides end before the next attempt touches their checkpoints
        t.join(timeout=300)
        assert not t.is_alive(), "a party never ended"
    errors = [r for r in results.values() if isinstance(r, Exception)]
    if errors:
        assert cut_at is not None and cut.sent >= cut_at, f"failed without a cut: {errors!r}"  # both sides
        return None
    return {"lender": results[0], "platform": results[1], "steps": steps, "messages": cut.sent}


def model_files(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.glob("*/model/*"))}


def from_psi(source: Path, root: Path) -> Path:
    """Job folders holding only the PSI checkpoints of the job in ``source``."""
    for party in (LENDER, PLATFORM):
        (root / party).mkdir(parents=True)
        shutil.copytree(source / party / "psi", root / party / "psi")
    return root


def test_a_run_cut_at_any_point_resumes_to_the_model_of_an_uninterrupted_run(tables, tmp_path):
    full = attempt(tables, tmp_path / "full", tmp_path / "full_out", resume=False)
    assert full is not None
    assert ("psi", 1, 1) in full["steps"][LENDER] and ("tree", 4, 4) in full["steps"][LENDER]
    assert full["steps"][PLATFORM][-1] == ("tree", 4, 4)
    # the job folders hold the PSI result and the last two trees of each party
    for party in (LENDER, PLATFORM):
        assert Checkpoints(tmp_path / "full" / party).names() == ["psi", "tree-0002", "tree-0003"]
    # resuming from the PSI checkpoint alone trains the uninterrupted run's model
    ref = attempt(tables, from_psi(tmp_path / "full", tmp_path / "ref"), tmp_path / "ref_out", resume=True)
    expected = model_files(tmp_path / "full_out")
    assert len(expected) == 2 and model_files(tmp_path / "ref_out") == expected
    assert ref["lender"]["validation"] == full["lender"]["validation"]

    n = ref["messages"]  # the handshake and the model's messages
    # cut in the first tree, in the last tree, during prediction, and three times in a row
    for cuts in ([n // 3], [n - 12], [n - 2], [n // 2, 4, n // 4]):
        root, out = from_psi(tmp_path / "full", tmp_path / f"cut{cuts}"), tmp_path / f"cut{cuts}_out"
        for i, at in enumerate(cuts):
            assert attempt(tables, root, out / str(i), resume=True, cut_at=at) is None
        done = attempt(tables, root, out / "last", resume=True)
        assert done is not None, cuts
        assert model_files(out / "last") == expected, cuts
        assert done["lender"]["validation"] == full["lender"]["validation"]


def test_a_run_cut_during_psi_runs_psi_again(tables, tmp_path):
    assert attempt(tables, tmp_path / "job", tmp_path / "out0", resume=False, cut_at=3) is None
    assert Checkpoints(tmp_path / "job" / LENDER).names() == []
    done = attempt(tables, tmp_path / "job", tmp_path / "out1", resume=True)
    assert done is not None and done["lender"]["bytes"]["psi"]["bytes_sent"] > 0
    ref = attempt(tables, from_psi(tmp_path / "job", tmp_path / "ref"), tmp_path / "ref_out", resume=True)
    assert ref is not None and model_files(tmp_path / "out1") == model_files(tmp_path / "ref_out")


def test_resuming_exchanges_checkpoints_and_both_keep_only_what_both_hold(tmp_path):
    a, b = Checkpoints(tmp_path / "a"), Checkpoints(tmp_path / "b")
    for store, names in ((a, {"psi": 0, "tree-0000": 0, "tree-0001": 0}), (b, {"psi": 0, "tree-0000": 0})):
        for name, g in names.items():
            store.save(name, {"generation": g})
    la, lb = memory_pair(LENDER, PLATFORM)
    ra, rb = run_parties((RunCheckpoints.agree, la, a, True), (RunCheckpoints.agree, lb, b, True))
    assert a.names() == b.names() == ["psi", "tree-0000"]
    assert ra.generation == rb.generation == 1 and ra.latest("tree")[0] == rb.latest("tree")[0] == 0
    # a name written in another attempt by each side is not common; without a common PSI nothing is
    b.save("psi", {"generation": 1})
    la, lb = memory_pair(LENDER, PLATFORM)
    ra, rb = run_parties((RunCheckpoints.agree, la, a, True), (RunCheckpoints.agree, lb, b, True))
    assert a.names() == b.names() == [] and ra.psi() is None and ra.generation == rb.generation == 2


@pytest.mark.parametrize("held, error", [
    (["psi@0"] * 2, "listed twice"),
    (["../../etc@0"], "not a checkpoint of a run job"),
    (["tree-0001"], "not a checkpoint of a run job"),
    ([3], "not a checkpoint of a run job"),
    ([f"tree-{i:04d}@0" for i in range(17)], "at most 16"),
])
def test_a_peers_checkpoint_list_is_checked_before_anything_is_dropped(held, error, tmp_path):
    with pytest.raises(ValueError, match=error) as info:
        _parse_held(held)
    assert CHECKPOINTS_MESSAGE in str(info.value)
    store = Checkpoints(tmp_path)
    store.save("psi", {"generation": 0}, {"rows": np.arange(3)})
    la, lb = memory_pair(LENDER, PLATFORM)
    lb.send(Message(CHECKPOINTS_MESSAGE, {"held": held}))
    with pytest.raises(ValueError, match=error):
        RunCheckpoints.agree(la, store, True)
    assert store.names() == ["psi"]


# -- hetero LR and split NN: a checkpoint per epoch -----------------------------------------

HLR_PARAMS = {"max_iter": 4, "batch_size": 100, "n_iter_no_change": 4, "n_jobs": 1}
#: messages of a hetero LR attempt: the run.checkpoints handshake and hlr.hello(_reply), then per epoch
#: 4 per batch (3 batches of the 300 training rows) and hlr.epoch, hlr.epoch_done
HLR_BEFORE, HLR_EPOCH = 4, 3 * 4 + 2


def test_hetero_lr_cut_mid_epoch_or_between_epochs_resumes_to_the_same_coefficients(tables, tmp_path):
    """Exact: batches come from the shared seed, the masks cancel in integers, a fresh key decrypts the
    same sums; so the resumed coefficients are the uninterrupted run's bit for bit (the files' bytes)."""
    def run(root, out, cut_at=None, resume=True):
        return attempt(tables, root, out, resume, cut_at, model="hetero_lr", model_params=HLR_PARAMS,
                       tracking=tmp_path / "mlruns")

    def held(root):
        return {party: Checkpoints(root / party).names() for party in (LENDER, PLATFORM)}

    full = run(tmp_path / "full", tmp_path / "full_out", resume=False)
    assert full is not None and full["steps"][PLATFORM][-1] == ("epoch", 4, 4)
    assert full["steps"][LENDER][-1] == ("epoch", 4, 4)
    assert held(tmp_path / "full") == {p: ["epoch-0002", "epoch-0003", "psi"] for p in (LENDER, PLATFORM)}
    expected = model_files(tmp_path / "full_out")
    assert sorted(expected) == ["hetero_lr_lender.json", "hetero_lr_platform.json"]

    # three cuts in a row, each attempt resuming from the PSI result and the epochs both parties hold
    root, out = from_psi(tmp_path / "full", tmp_path / "cut"), tmp_path / "cut_out"
    # at epoch 1's hlr.epoch_done: the lender has saved epoch 1, the platform has not
    assert run(root, out / "0", cut_at=HLR_BEFORE + 2 * HLR_EPOCH) is None
    assert held(root) == {LENDER: ["epoch-0000", "epoch-0001", "psi"], PLATFORM: ["epoch-0000", "psi"]}
    # resumed from epoch 1 (the lender drops its epoch 1), cut in the middle of epoch 2
    assert run(root, out / "1", cut_at=HLR_BEFORE + HLR_EPOCH + 6) is None
    assert held(root) == {p: ["epoch-0000", "epoch-0001", "psi"] for p in (LENDER, PLATFORM)}
    # resumed from epoch 2, cut between epochs 2 and 3 (at epoch 3's first message)
    assert run(root, out / "2", cut_at=HLR_BEFORE + HLR_EPOCH + 1) is None
    assert held(root) == {p: ["epoch-0001", "epoch-0002", "psi"] for p in (LENDER, PLATFORM)}
    done = run(root, out / "3")
    assert done is not None and done["messages"] == HLR_BEFORE + HLR_EPOCH + 4  # epoch 3, two predictions
    assert model_files(out / "3") == expected
    assert done["lender"]["validation"] == full["lender"]["validation"]
    assert done["lender"]["history"] == [{**h, "seconds": d["seconds"]}
                                         for h, d in zip(full["lender"]["history"], done["lender"]["history"])]


SNN_PARAMS = {"hidden_layer_sizes": [8], "embedding_dim": 4, "top_layer_sizes": [8], "batch_size": 100,
              "max_iter": 4, "n_iter_no_change": 4, "gradient_clip": None, "embedding_clip": None}
#: messages of a split NN attempt: the handshake and snn.hello(_reply), then per epoch 2 per batch
#: (3 batches) and snn.epoch, snn.epoch_done
SNN_BEFORE, SNN_EPOCH = 4, 3 * 2 + 2


def test_splitnn_without_noise_cut_and_resumed_trains_the_uninterrupted_networks(tables, tmp_path, monkeypatch):
    """With noise off a resumed run equals the uninterrupted one: the networks, Adam's moments and the
    early-stopping state come from each party's checkpoint and the batches from the shared seed. With
    noise on (the default for gradients) the noise is fresh OS randomness: no two runs are equal.

    Each party draws its initial weights from its own secret seed (OS CSPRNG), so two runs from
    nothing differ; the test fixes that seed to compare an interrupted run with an uninterrupted one
    (a cut before the first epoch's checkpoint starts again from fresh weights)."""
    pytest.importorskip("torch")
    import fedacq.learn.splitnn as splitnn

    monkeypatch.setattr(splitnn, "_own_seed", lambda init_seed: 11 if init_seed is None else int(init_seed))

    def run(root, out, cut_at=None, resume=True):
        return attempt(tables, root, out, resume, cut_at, model="splitnn", model_params=SNN_PARAMS,
                       tracking=tmp_path / "mlruns")

    full = run(tmp_path / "full", tmp_path / "full_out", resume=False)
    assert full is not None and full["steps"][PLATFORM][-1] == ("epoch", 4, 4)
    expected = model_files(tmp_path / "full_out")
    assert sorted(expected) == ["splitnn_lender.json", "splitnn_lender.npz", "splitnn_platform.json",
                                "splitnn_platform.npz"]
    root, out = from_psi(tmp_path / "full", tmp_path / "cut"), tmp_path / "cut_out"
    # in the middle of epoch 1, then (resumed from epoch 1) between epochs 2 and 3
    assert run(root, out / "0", cut_at=SNN_BEFORE + SNN_EPOCH + 3) is None
    assert Checkpoints(root / PLATFORM).names() == ["epoch-0000", "psi"]
    assert run(root, out / "1", cut_at=SNN_BEFORE + 2 * SNN_EPOCH + 1) is None
    assert Checkpoints(root / LENDER).names() == ["epoch-0001", "epoch-0002", "psi"]
    done = run(root, out / "2")
    assert done is not None and done["messages"] == SNN_BEFORE + SNN_EPOCH + 4  # epoch 3, two predictions
    assert model_files(out / "2") == expected
    assert done["lender"]["validation"] == full["lender"]["validation"]
