"""The Ray engine against the local engine, on a two-node Ray cluster started on 127.0.0.1.

One cluster for the module (a head and a worker, one CPU each: ~15-25 s to start), stopped
in teardown whatever happened (see ``tests/ray_cluster.py``). Every comparison is with the
local engine on the same inputs: PSI results, blinded points, scores, and plaintexts
through Ray encryption / decryption. Small Paillier / OU keys (``insecure_test_key=True``):
the chunking and shipping under test do not depend on the key size, and 2048-bit key
generation would dominate the test's time.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fedacq import compute
from fedacq.compute import ComputeConfig, LocalEngine, load_compute, make_engine
from fedacq.crypto import ou, paillier
from fedacq.crypto.ecdh import BlindingKey
from fedacq.link.memory import memory_pair, run_parties
from fedacq.node.config import load_config
from fedacq.psi import LenderSetStore, PlatformCache, psi_lender, psi_platform
from fedacq.psi.cache import column_domain

sys.path.insert(0, str(Path(__file__).parent))
from ray_cluster import LOOPBACK, start_cluster, listening_addresses  # noqa: E402


# -- configuration (no cluster needed) --------------------------------------------------------
def test_compute_config_defaults_to_local_and_validates_ray():
    assert load_compute(None, "p.toml") == ComputeConfig("local")
    cfg = load_compute({"engine": "ray", "address": "10.0.0.5:6379"}, "p.toml")
    assert (cfg.engine, cfg.address) == ("ray", "10.0.0.5:6379")
    assert load_compute({"engine": "local", "workers": 3}, "p.toml").workers == 3


@pytest.mark.parametrize("table, words", [
    ({"engine": "spark"}, "engine must be one of"),
    ({"engine": "ray"}, "needs address"),
    ({"engine": "ray", "address": "10.0.0.5"}, "host:port"),
    ({"engine": "ray", "address": "10.0.0.5:70000"}, "host:port"),
    ({"engine": "ray", "address": "a b:1"}, "host:port"),
    ({"engine": "ray", "address": "h:1", "workers": 2}, "workers is for engine"),
    ({"engine": "local", "address": "h:1"}, "address is for engine"),
    ({"engine": "local", "workers": 0}, "positive integer"),
    ({"engine": 1}, "must be a string"),
    ({"engine": "ray", "adress": "h:1"}, "unknown key(s) ['adress']"),
    ("ray", "must be a table"),
])
def test_bad_compute_tables_name_the_file_and_key(table, words):
    with pytest.raises(ValueError) as err:
        load_compute(table, "parties/platform/party.toml")
    assert "parties/platform/party.toml: [compute]" in str(err.value) and words in str(err.value)


def test_node_config_reads_compute(tmp_path):
    base = ('[node]\nparty = "platform"\nlisten = "127.0.0.1:0"\n[tls]\nca = "c"\ncert = "c"\nkey = "k"\n'
            '[peer]\nname = "lender"\naddress = "127.0.0.1:1"\n')
    path = tmp_path / "party.toml"
    path.write_text(base)
    assert load_config(path).compute == ComputeConfig()
    path.write_text(base + '[compute]\nengine = "ray"\naddress = "ray-head.internal:6379"\n')
    assert load_config(path).compute.address == "ray-head.internal:6379"
    path.write_text(base + '[compute]\nengine = "ray"\n')
    with pytest.raises(ValueError, match=r"party.toml: \[compute\] .*needs address"):
        load_config(path)


def test_ray_engine_without_ray_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if ray were not installed
    monkeypatch.delitem(sys.modules, "fedacq.compute.ray_engine", raising=False)
    with pytest.raises(ImportError, match=r"pip install 'fedacq\[ray\]'"):
        make_engine(ComputeConfig("ray", "127.0.0.1:6379"))


def test_score_command_checks_its_engine_options(tmp_path, capsys):
    from fedacq.cli import main

    args = ["score", "--model", str(tmp_path / "m.json"), "--users", str(tmp_path / "u.parquet"),
            "--out", str(tmp_path / "o.parquet")]
    assert main([*args, "--engine", "ray"]) == 2
    assert "needs address" in capsys.readouterr().err
    assert main([*args, "--engine", "ray", "--ray-address", "127.0.0.1:1", "--n-jobs", "2"]) == 2
    assert "workers is for engine" in capsys.readouterr().err


def test_active_engine_is_per_context():
    engine = LocalEngine(workers=1)
    assert isinstance(compute.active(), LocalEngine) and compute.active() is not engine
    with compute.using(engine):
        assert compute.active() is engine and compute.choose() is engine
        assert compute.choose(workers=2).workers == 2
    assert compute.active() is not engine
    with pytest.raises(ValueError, match="not both"):
        compute.choose(engine, workers=2)


# -- the cluster --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ray_cluster():
    pytest.importorskip("ray", reason="the Ray engine needs the optional 'ray' extra")
    from ray._private import ray_constants

    # short: Ray's unix socket paths under this folder must fit in 107 bytes
    directory = Path(tempfile.mkdtemp(prefix="fq-ray-", dir="/tmp"))
    cluster = None
    with pytest.MonkeyPatch.context() as mp:
        # the driver too must take 127.0.0.1 as is, not as "the address of the default route"
        # (the launcher sets RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 for the same; ray is imported already)
        mp.setattr(ray_constants, "ENABLE_RAY_CLUSTER", False)
        try:
            cluster = start_cluster(directory)
            yield cluster
        finally:
            if cluster is not None:
                cluster.close()
            shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="module")
def ray_engine(ray_cluster):
    from fedacq.compute import ray_engine as module

    engine = module.RayEngine(ray_cluster.address)
    try:
        engine.connect()
        yield engine
    finally:
        module.disconnect()


def test_cluster_has_two_nodes_and_listens_on_loopback_only(ray_cluster, ray_engine):
    import ray

    nodes = [n for n in ray.nodes() if n["Alive"]]
    assert len(nodes) == 2 and {n["NodeManagerAddress"] for n in nodes} == {LOOPBACK}
    assert ray_engine.cpus() == 2
    key = BlindingKey.generate()
    ray_engine.blind_ids(key, [b"warm-up"] * 3000, b"s" * 16, b"d")  # workers on both nodes now run
    listening = listening_addresses(ray_cluster.pids() | {os.getpid()})  # the driver's Ray worker too
    assert listening
    for entry in listening:
        host = ipaddress.ip_address(entry.rsplit(":", 1)[0])
        host = getattr(host, "ipv4_mapped", None) or host
        assert host.is_loopback, f"a Ray process of the test cluster listens on {entry}"


def test_one_process_one_cluster(ray_engine):
    from fedacq.compute.ray_engine import RayEngine

    with pytest.raises(RuntimeError, match="already connected"):
        RayEngine("127.0.0.1:1").connect()


def test_blinding_on_ray_equals_local(ray_engine):
    local, key, salt = LocalEngine(workers=1), BlindingKey.generate(), os.urandom(32)
    ids = [f"user-{i}".encode() for i in range(5000)]
    domain = column_domain(0, "text")
    blinded = ray_engine.blind_ids(key, ids, salt, domain)
    assert np.array_equal(blinded, local.blind_ids(key, ids, salt, domain))
    other = BlindingKey.generate()
    twice = ray_engine.reblind(other, blinded)
    assert np.array_equal(twice, local.reblind(other, blinded))
    assert np.array_equal(ray_engine.unblind(key, twice), local.unblind(key, twice))
    assert ray_engine.blind_ids(key, [], salt, domain).shape == (0, 32)
    assert ray_engine.tasks["blind_ids"] >= 2 and ray_engine.tasks["unblind"] >= 2


def _psi(lender, platform, cols, lender_engine, platform_engine, lender_kw=None, platform_kw=None):
    link_l, link_p = memory_pair("lender", "platform", job="t")
    res_l, res_p = run_parties(
        (lambda: psi_lender(link_l, lender, cols, engine=lender_engine, **(lender_kw or {})),),
        (lambda: psi_platform(link_p, platform, cols, engine=platform_engine, **(platform_kw or {})),),
        timeout=300)
    return res_l, res_p


def _psi_tables():
    rng = np.random.default_rng(7)
    platform = pd.DataFrame({"phone": [f"138{n:08d}" for n in rng.choice(10**8, 4000, replace=False)],
                             "device": [f"dev{i}" for i in range(4000)]})
    lender = platform.sample(1500, random_state=1).reset_index(drop=True)
    lender.loc[::5, "phone"] = None                      # matched on the second column instead
    extra = pd.DataFrame({"phone": [f"139{i:08d}" for i in range(500)], "device": [f"x{i}" for i in range(500)]})
    return pd.concat([lender, extra], ignore_index=True), platform


def test_balanced_psi_on_ray_equals_local(ray_engine):
    lender, platform = _psi_tables()
    cols = ["phone", "device"]
    local = _psi(lender, platform, cols, LocalEngine(1), LocalEngine(1))
    on_ray = _psi(lender, platform, cols, ray_engine, ray_engine)
    mixed = _psi(lender, platform, cols, ray_engine, LocalEngine(1))  # each party picks its own engine
    # the shared order follows the (fresh) blinding keys; the matches and their columns do not
    matches = [sorted(zip(res_l.rows.tolist(), res_p.rows.tolist(), res_l.matched_on.tolist()))
               for res_l, res_p in (local, on_ray, mixed)]
    assert len(matches[0]) == 1500 and matches[0] == matches[1] == matches[2]
    assert {m[2] for m in matches[0]} == {0, 1}


def test_unbalanced_psi_with_a_cache_built_on_ray_equals_local(ray_engine, tmp_path):
    lender, platform = _psi_tables()
    cols = ["phone", "device"]
    key, salt = BlindingKey.generate(), os.urandom(32)
    built = {name: PlatformCache.build(tmp_path / name, platform, cols, key=key, salt=salt, engine=engine)
             for name, engine in (("local", LocalEngine(1)), ("ray", ray_engine))}

    def by_row(cache, c):  # tokens are a fresh random relabelling per build: compare per platform row
        return cache.points[c][np.argsort(cache.rows_by_token[cache.tokens[c]])]

    for c in range(2):
        assert np.array_equal(by_row(built["local"], c), by_row(built["ray"], c))
    results = {}
    for name, engine in (("local", LocalEngine(1)), ("ray", ray_engine)):
        res_l, res_p = _psi(lender, platform, cols, engine, engine,
                            lender_kw={"mode": "unbalanced", "set_store": LenderSetStore(tmp_path / f"store-{name}")},
                            platform_kw={"cache": built[name]})
        results[name] = sorted(zip(res_l.rows.tolist(), res_p.rows.tolist()))
    assert len(results["local"]) == 1500 and results["local"] == results["ray"]


@pytest.mark.parametrize("scheme", [paillier, ou])
def test_encryption_and_decryption_on_ray_equal_local(ray_engine, scheme):
    pk, sk = scheme.generate_keypair(1024, insecure_test_key=True)
    local = LocalEngine(workers=1)
    plaintexts = [secrets.randbits(64) for _ in range(700)]
    for ciphertexts in (ray_engine.encrypt(pk, plaintexts), ray_engine.encrypt_private(sk, plaintexts)):
        assert len(ciphertexts) == len(plaintexts)
        assert local.decrypt(sk, ciphertexts) == plaintexts
    theirs = local.encrypt(pk, plaintexts)
    assert ray_engine.decrypt(sk, theirs) == local.decrypt(sk, theirs) == plaintexts
    assert ray_engine.encrypt(pk, []) == [] and ray_engine.decrypt(sk, []) == []
    assert ray_engine.tasks["decrypt"] >= 2


def test_scoring_on_ray_equals_local(ray_engine, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    import xgboost as xgb

    rng = np.random.default_rng(3)
    n = 3000
    X = pd.DataFrame({"watch": rng.normal(size=n), "spend": rng.exponential(size=n).astype(np.float32),
                      "active": rng.integers(0, 5, size=n)})
    y = (X["watch"] + 0.5 * X["spend"] + rng.normal(size=n) > 0.5).astype(int)
    model = tmp_path / "prospect.json"
    xgb.train({"objective": "binary:logistic", "max_depth": 3}, xgb.DMatrix(X, y), 5).save_model(model)
    users = X.assign(user_id=[f"u{i}" for i in range(n)], region="north")
    users.loc[::7, "spend"] = np.nan                      # missing values go to XGBoost's default branch
    path = tmp_path / "users.parquet"
    pq.write_table(pa.Table.from_pandas(users, preserve_index=False), path, row_group_size=400)

    local = LocalEngine(workers=1).score_parquet(model, path, tmp_path / "local.parquet", batch_size=256)
    on_ray = ray_engine.score_parquet(model, path, tmp_path / "ray.parquet", batch_size=256)
    assert local.rows == on_ray.rows == n and ray_engine.tasks["score"] == 8  # one task per row group
    assert pq.read_table(on_ray.out).equals(pq.read_table(local.out))
    assert not list(tmp_path.glob("*.partial"))

    from fedacq.cli import main  # `fedacq score --engine ray`: the same file, through the command line
    cli_out = tmp_path / "cli.parquet"
    assert main(["score", "--model", str(model), "--users", str(path), "--out", str(cli_out), "--batch-size", "256",
                 "--engine", "ray", "--ray-address", ray_engine.address]) == 0
    assert pq.read_table(cli_out).equals(pq.read_table(local.out))

    no_spend = tmp_path / "users-no-spend.parquet"
    pq.write_table(pq.read_table(path).drop_columns(["spend"]), no_spend)
    with pytest.raises(ValueError, match="missing feature column"):
        ray_engine.score_parquet(model, no_spend, tmp_path / "bad.parquet")
    assert not (tmp_path / "bad.parquet").exists()


def test_histograms_on_ray_equal_the_process_engine(ray_engine):
    from fedacq.learn.histogram import HistogramEngine

    rng = np.random.default_rng(5)
    pk, _ = paillier.generate_keypair(1024, insecure_test_key=True)
    n_rows, n_bins = 300, np.array([4, 3, 5, 2, 6])
    bins = np.stack([rng.integers(-1, k, size=n_rows) for k in n_bins], axis=1)  # -1: missing
    cts = pk.encrypt_raw([secrets.randbits(40) for _ in range(n_rows)], workers=1).ciphertexts
    active = np.array([0, 2, 3, 4])                                              # feature 1 not sampled
    small = np.flatnonzero(bins[:, 0] <= 0)
    jobs = [(0, 1, 2, small)]
    args = (bins, n_bins, pk.nsquare, pk.n_bits, 8 + 64)
    local, on_ray = HistogramEngine(*args, n_jobs=2), ray_engine.histograms(*args)  # two blocks each
    try:
        replies = []
        for engine in (local, on_ray):
            engine.start_tree(cts, active)
            replies.append((engine.block_features, engine.root(), engine.level(jobs, [1, 2])))
    finally:
        local.close()
        on_ray.close()
    assert replies[0] == replies[1] and replies[1][0] == [2, 2] and len(replies[1][2]) > 0


@pytest.mark.parametrize("scheme", [paillier, ou])
def test_key_batches_go_to_the_active_ray_engine(ray_engine, scheme):
    """Inside ``compute.using(ray)`` a large batch at ``workers=None`` runs on the cluster; ``workers=1`` stays here."""
    pk, sk = scheme.generate_keypair(1024, insecure_test_key=True)
    plaintexts = [secrets.randbits(64) for _ in range(paillier.PARALLEL_THRESHOLD)]
    before = dict(ray_engine.tasks)

    def ran(kind: str) -> int:
        return ray_engine.tasks.get(kind, 0) - before.get(kind, 0)

    with compute.using(ray_engine):
        public = pk.encrypt_raw(plaintexts)
        private = sk.encrypt_raw(plaintexts)
        assert ran("encrypt") >= 2 and ran("encrypt_private") >= 2
        assert sk.decrypt_raw(public) == sk.decrypt_raw(private) == plaintexts and ran("decrypt") >= 2
        done = dict(ray_engine.tasks)
        assert sk.decrypt_raw(pk.encrypt_raw(plaintexts[:600], workers=1), workers=1) == plaintexts[:600]
        assert sk.decrypt_raw(pk.encrypt_raw(plaintexts[:10])) == plaintexts[:10]  # small: in-process
        assert ray_engine.tasks == done


def test_an_ou_decryption_refused_on_ray_fails_with_the_reason(ray_engine):
    """A forged OU ciphertext is refused on the cluster as it is locally (no residue comes back)."""
    pk, sk = ou.generate_keypair(1024, insecure_test_key=True)
    honest = pk.encrypt_raw(list(range(600)), workers=1).ciphertexts
    forged = honest[:599] + [secrets.randbelow(int(pk.n) - 2) + 2]   # not an encryption of a small value
    with compute.using(ray_engine), pytest.raises(ValueError, match="outside the OU plaintext bound"):
        sk.decrypt_raw(paillier.EncryptedVector(pk, forged))


def test_secureboost_histograms_on_ray_give_the_local_trees(ray_engine):
    """The platform's histograms in Ray actors (its active engine) under an OU key: the same trees."""
    from fedacq.learn.secureboost import SecureBoostLender, SecureBoostPlatform

    rng = np.random.default_rng(11)
    Xl, Xp = rng.normal(size=(300, 2)), rng.normal(size=(300, 3))
    y = (Xl[:, 0] - Xp[:, 1] + rng.normal(size=300) > 0).astype(float)

    def train(platform_engine):
        la, pa = memory_pair("lender", "platform")
        lender = SecureBoostLender(scheme="ou", key_bits=1024, insecure_test_key=True, n_jobs=1, n_estimators=2,
                                   max_depth=3, max_bin=8)
        platform = SecureBoostPlatform(n_jobs=1, min_key_bits=1024, schemes=("ou",))

        def platform_side():
            with compute.using(platform_engine):
                platform.fit(pa, Xp)

        run_parties((lender.fit, la, Xl, y), (platform_side,), timeout=300)
        return [t.to_dict() for t in lender.trees_], [t.to_dict() for t in platform.trees_]

    before = ray_engine.tasks.get("histogram_actors", 0)
    assert train(ray_engine) == train(LocalEngine(workers=1))
    assert ray_engine.tasks["histogram_actors"] > before
