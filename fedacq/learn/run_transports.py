"""How the two parties of a ``fedacq run`` job are started: threads over a memory link, or two
``fedacq node`` processes over mutual TLS.

``inproc``: both parties' jobs run in this process, in threads, over
:func:`~fedacq.link.memory.memory_pair`, each recording what it sends in its
own ledger ``DIR/<party>/egress.jsonl``. ``grpc``: two real nodes on 127.0.0.1
(:mod:`fedacq.node.local`), one ``run`` job (:mod:`fedacq.learn.run_node`),
so each party's job runs in its own node. Either way each party returns its own
report (:func:`fedacq.learn.run.party_job`).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any, Callable

from fedacq.learn.run_config import LENDER, PLATFORM, RunConfig
from fedacq.learn.run_tables import PartyTable

#: a node job may train for hours; the driver waits for it rather than a link timeout.
GRPC_JOB_TIMEOUT = 7 * 24 * 3600.0

#: ``party_job(party, link, table, cfg, params)``: one party's side of the job.
PartyJob = Callable[..., dict[str, Any]]


def run_inproc(cfg: RunConfig, party_job: PartyJob, tables: dict[str, PartyTable],
               params: dict[str, Any]) -> tuple[dict, dict]:
    """Both parties in threads of this process over a memory link; (lender, platform) reports.

    Both run on the engine ``cfg.compute`` names (one process talks to one Ray
    cluster): a trial by one operator, where both parties' work shares the cluster.
    """
    from fedacq.compute import make_engine, using
    from fedacq.link.ledger import PartyLedger
    from fedacq.link.memory import memory_pair, run_parties

    engine = make_engine(cfg.compute)

    def on_engine(*args: Any) -> dict[str, Any]:
        with using(engine):  # the active engine is per thread: entered in each party's own
            return party_job(*args)

    ledgers = {p: PartyLedger(cfg.out_dir / p, p) for p in (LENDER, PLATFORM)}
    lender_link, platform_link = memory_pair(LENDER, PLATFORM, job=cfg.job_id, ledgers=ledgers)
    return run_parties((on_engine, LENDER, lender_link, tables[LENDER], cfg, params),
                       (on_engine, PLATFORM, platform_link, tables[PLATFORM], cfg, params))


def run_grpc(cfg: RunConfig) -> tuple[dict, dict]:
    """Both parties as real ``fedacq node`` processes on 127.0.0.1 (mutual TLS), one ``run`` job.

    Each node's state, keys, egress ledger and MLflow store live under
    ``DIR/<party>/``; its job outputs under ``DIR/<party>/state/jobs/<id>/work``.
    The plots the lender's node drew are copied to ``DIR``.
    """
    from fedacq.learn.run_node import DATASET, job_params
    from fedacq.node.local import start_local_pair

    if cfg.tracking_dir is not None:
        raise ValueError("--tracking-dir is not used with --transport grpc: each node logs to its own store")
    if cfg.compute.engine != "local":
        raise ValueError("--engine is for --transport inproc: with --transport grpc each node runs on the "
                         "engine of its own party.toml ([compute])")
    cfg.say(LENDER, "starting a lender node and a platform node (gRPC, mutual TLS)")
    job = {"job": {"protocol": "run", "id": f"run-{cfg.job_id}"},
           "datasets": {LENDER: {DATASET: "table"}, PLATFORM: {DATASET: "table"}},
           "params": job_params(cfg)}
    datasets = {LENDER: {"table": cfg.lender_path.resolve()}, PLATFORM: {"table": cfg.platform_path.resolve()}}
    # one operator runs both nodes here: their policy is this run's own settings
    policy = {"min_intersection": cfg.min_intersection, "test_mode": cfg.insecure_test_key,
              "schemes": [cfg.scheme]}
    if cfg.insecure_test_key:
        policy["min_key_bits"] = cfg.key_bits
    with start_local_pair(cfg.out_dir, datasets=datasets, allow=["run"],
                          policy={LENDER: policy, PLATFORM: policy}) as pair:
        cfg.say(LENDER, f"job {job['job']['id']} submitted; waiting (progress: the nodes' job logs)")
        pair.submit(job, party=LENDER, wait=False)
        records = {}
        for party in (LENDER, PLATFORM):
            client = pair.client(party)
            follow = (lambda line, p=party: print(f"[{p} node] {line}", file=sys.stderr, flush=True)) \
                if cfg.progress and party == LENDER else None
            try:
                records[party] = client.wait(job["job"]["id"], timeout=GRPC_JOB_TIMEOUT, on_log=follow)
            finally:
                client.close()
    for party, record in records.items():
        if record["status"] != "succeeded":
            raise RuntimeError(f"the {party} node's job failed: {record.get('error')}")
    lender, platform = records[LENDER]["result"], records[PLATFORM]["result"]
    copied = []
    for plot in lender["plots"]:
        target = cfg.out_dir / Path(plot).name
        shutil.copyfile(plot, target)
        copied.append(str(target))
    lender["plots"] = copied
    return lender, platform
