"""A node's own policy: parameters completed by the proposer, checked by each node, never weakened."""

import pytest

from fedacq.node.config import load_config
from fedacq.node.policy import Policy, PolicyError, load_policy
from fedacq.node.protocols import load_protocol
from fedacq.paths import check_name, under


def run_params(**over):
    return {"id_column": "id", "label_column": "y", "model": "secureboost", **over}


def test_policy_defaults_are_the_safe_ones():
    p = load_policy(None, "party.toml", "platform")
    assert (p.test_mode, p.min_key_bits, p.min_intersection) == (False, 2048, 100)
    assert p.leaf_noise_max_epsilon is None and p.max_concurrent_jobs == 4


def test_ou_is_opt_in():
    assert load_policy(None, "party.toml", "platform").schemes == ("paillier",)
    both = load_policy({"schemes": ["ou", "paillier"]}, "party.toml", "lender")
    assert both.schemes == ("ou", "paillier")
    measure = load_protocol("measure")
    proposed = measure.resolve({"layer": "boost"}, both)  # the proposer's first scheme
    assert proposed["scheme"] == "ou"
    with pytest.raises(PolicyError, match=r"^policy schemes: proposed scheme='ou', platform allows one of \['paillier'\]"):
        measure.resolve(dict(proposed), Policy(party="platform"))
    with pytest.raises(PolicyError, match=r"^policy schemes: proposed scheme='ou', platform allows"):
        load_protocol("run").resolve(run_params(scheme="ou"), Policy(party="platform"))


def test_the_run_job_carries_the_scheme_and_models_refuse_schemes_they_are_not_sound_on():
    """The proposer takes its policy's first scheme the model runs on; a peer refuses one its policy does not
    list; hetero LR refuses OU whatever the policies say (fedacq.learn.hetero_lr.SCHEMES says why)."""
    from fedacq.learn.run_config import RunConfig
    from fedacq.learn.run_node import job_params

    run = load_protocol("run")
    both = Policy(party="lender", schemes=("ou", "paillier"))
    proposed = run.resolve(run_params(), both)
    assert proposed["scheme"] == "ou"
    assert run.resolve(dict(proposed), Policy(party="platform", schemes=("paillier", "ou"))) == proposed
    with pytest.raises(PolicyError, match=r"^policy schemes: proposed scheme='ou', platform allows one of "
                                          r"\['paillier'\]"):
        run.resolve(dict(proposed), Policy(party="platform"))
    assert run.resolve(run_params(model="hetero_lr"), both)["scheme"] == "paillier"
    with pytest.raises(PolicyError, match=r"^run: model 'hetero_lr' runs on scheme\(s\) \['paillier'\], not 'ou'"):
        run.resolve(run_params(model="hetero_lr", scheme="ou"), both)
    cfg = RunConfig("l.csv", "p.csv", "id", "y", "out", scheme="ou")
    assert job_params(cfg)["scheme"] == "ou" and run.resolve(job_params(cfg), both)["scheme"] == "ou"


@pytest.mark.parametrize("table, words", [
    ({"schemes": []}, "schemes must name at least one scheme"),
    ({"schemes": ["paillier", "rsa"]}, "unknown value(s) ['rsa']"),
    ({"min_intersection": 0}, "min_intersection must be a positive integer"),
    ({"min_key_bits": 1024}, "needs test_mode"),
    ({"models": ["secureboost", "gbm"]}, "unknown value(s) ['gbm']"),
    ({"leaf_noise_max_epsilon": 0}, "leaf_noise_max_epsilon"),
    ({"min_intersecton": 5}, "unknown [policy] key(s) ['min_intersecton']"),
    ({"test_mode": "yes"}, "test_mode must be true or false"),
])
def test_bad_policy_tables_name_the_file_and_key(table, words):
    with pytest.raises(ValueError) as err:
        load_policy(table, "parties/lender/party.toml", "lender")
    assert "parties/lender/party.toml" in str(err.value) and words in str(err.value)


def test_the_proposer_fills_from_its_policy_and_the_result_is_a_fixed_point():
    run = load_protocol("run")
    policy = Policy(party="lender", min_intersection=500)
    out = run.resolve(run_params(), policy)
    assert out["min_intersection"] == 500 and out["key_bits"] == 2048 and out["scheme"] == "paillier"
    assert out["model_params"]["n_estimators"] == 30  # the model's own defaults, written out
    assert run.resolve(dict(out), Policy(party="platform", min_intersection=500)) == out


@pytest.mark.parametrize("params, key, proposed", [
    (run_params(key_bits=128, insecure_test_key=True), "test_mode", "insecure_test_key=true"),
    (run_params(key_bits=1024), "min_key_bits", "key_bits=1024"),
    (run_params(min_intersection=1), "min_intersection", "min_intersection=1"),
    (run_params(model="splitnn_v2"), "models", "model='splitnn_v2'"),
    (run_params(scheme="rsa"), "schemes", "scheme='rsa'"),
])
def test_weaker_run_proposals_are_refused_naming_key_proposed_and_allowed(params, key, proposed):
    with pytest.raises(PolicyError) as err:
        load_protocol("run").resolve(params, Policy(party="platform"))
    text = str(err.value)
    assert text.startswith(f"policy {key}: proposed {proposed}, platform allows"), text


def test_modes_and_models_a_node_does_not_allow():
    policy = Policy(party="platform", modes=("joint",), models=("secureboost",))
    run = load_protocol("run")
    with pytest.raises(PolicyError, match="policy modes: proposed mode='prospect'"):
        run.resolve(run_params(mode="prospect"), policy)
    with pytest.raises(PolicyError, match="policy models: proposed model='hetero_lr'"):
        run.resolve(run_params(model="hetero_lr"), policy)


def test_lender_label_guards():
    run = load_protocol("run")
    lender = Policy(party="lender", leaf_noise_max_epsilon=5.0, hetero_lr_min_batch_size=512)
    with pytest.raises(PolicyError, match="policy leaf_noise_max_epsilon: proposed leaf_noise=None"):
        run.resolve(run_params(mode="prospect"), lender)
    noisy = {"leaf_noise": {"mechanism": "laplace", "epsilon": 50.0}}
    with pytest.raises(PolicyError, match="leaf_noise_max_epsilon"):
        run.resolve(run_params(mode="prospect", model_params=noisy), lender)
    ok = {"leaf_noise": {"mechanism": "laplace", "epsilon": 2.0}}
    assert run.resolve(run_params(mode="prospect", model_params=ok), lender)["model_params"]["leaf_noise"] == \
        {"mechanism": "laplace", "epsilon": 2.0}
    assert run.resolve(run_params(mode="joint"), lender)["mode"] == "joint"  # joint releases no leaves
    with pytest.raises(PolicyError, match="policy hetero_lr_min_batch_size: proposed batch_size=64"):
        run.resolve(run_params(model="hetero_lr", model_params={"batch_size": 64}), lender)


def test_psi_policy_and_names():
    psi = load_protocol("psi")
    platform = Policy(party="platform", reveal_to=("lender",), psi_modes=("balanced",))
    assert psi.resolve({"id_columns": ["phone"]}, platform)["reveal_to"] == "lender"
    with pytest.raises(PolicyError, match="policy reveal_to: proposed reveal_to='both'"):
        psi.resolve({"id_columns": ["phone"], "reveal_to": "both"}, platform)
    with pytest.raises(PolicyError, match="policy psi_modes: proposed mode='unbalanced'"):
        psi.resolve({"id_columns": ["phone"], "mode": "unbalanced"}, platform)
    with pytest.raises(PolicyError, match="not a valid name"):
        psi.resolve({"id_columns": ["phone"], "dataset": "../../victim"}, platform)
    with pytest.raises(PolicyError, match="unknown parameter"):
        psi.resolve({"id_columns": ["phone"], "cache_dir": "/tmp/x"}, platform)


@pytest.mark.parametrize("name", ["../x", "..", ".hidden", "a/b", "", "x" * 65, "a\x00b", "..a"])
def test_names_that_could_leave_a_folder_are_refused(name):
    with pytest.raises(ValueError):
        check_name(name, "name")


def test_under_refuses_symlinks_out(tmp_path):
    (tmp_path / "root").mkdir()
    (tmp_path / "outside").mkdir()
    (tmp_path / "root" / "link").symlink_to(tmp_path / "outside")
    assert under(tmp_path / "root", "a") == (tmp_path / "root" / "a").resolve()
    with pytest.raises(ValueError, match="outside"):
        under(tmp_path / "root", "link")


def test_node_config_reads_policy_and_refuses_bad_dataset_names(tmp_path):
    base = ('[node]\nparty = "lender"\nlisten = "127.0.0.1:0"\n[tls]\nca = "c"\ncert = "c"\nkey = "k"\n'
            '[peer]\nname = "platform"\naddress = "127.0.0.1:1"\n')
    path = tmp_path / "party.toml"
    path.write_text(base + '[policy]\nmin_intersection = 1000\nleaf_noise_max_epsilon = 4\n')
    cfg = load_config(path)
    assert cfg.policy.min_intersection == 1000 and cfg.policy.leaf_noise_max_epsilon == 4.0
    path.write_text(base + '[datasets]\n"../up" = "x.csv"\n')
    with pytest.raises(ValueError, match="not a valid name"):
        load_config(path)


def test_example_jobs_pass_both_example_parties_policies():
    """The job files in parties/jobs resolve at the lender and are accepted unchanged by the platform."""
    from pathlib import Path

    from fedacq.node.jobs import load_job_file

    root = Path(__file__).resolve().parent.parent
    policies = {p: load_config(root / "parties" / p / "party.toml").policy for p in ("lender", "platform")}
    for path in sorted((root / "parties" / "jobs").glob("*.toml")):
        spec = load_job_file(path)
        protocol = load_protocol(spec.protocol)
        proposed = protocol.resolve(dict(spec.params), policies["lender"])
        assert protocol.resolve(dict(proposed), policies["platform"]) == proposed, path.name


def test_the_platform_bounds_its_psi_cache_key_life(tmp_path):
    """The cache key's life is the platform node's own policy, not the job's."""
    policy = load_policy({"psi_cache_max_increments": 5, "psi_cache_max_age_days": 2.5}, "party.toml", "platform")
    assert (policy.psi_cache_max_increments, policy.psi_cache_max_age_days) == (5, 2.5)
    for table, words in (({"psi_cache_max_increments": 0}, "positive integer"),
                         ({"psi_cache_max_age_days": 0}, "non-negative number"),
                         ({"psi_cache_max_age_days": "week"}, "non-negative number")):
        with pytest.raises(ValueError, match=words):
            load_policy(table, "party.toml", "platform")
