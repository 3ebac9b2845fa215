"""query.ood and evaluate.external extras on the tiny generated federation (one ingest)."""

from __future__ import annotations

import csv

import numpy as np
import torch

from fedmi.client.egress import check_outbound
from fedmi.client.evaluation.handler import handle_evaluate
from fedmi.client.evaluation.ood import handle_ood_statistics
from fedmi.client.site.settings import resolve_site
from fedmi.server.federation.ood import statistics_from_metrics
from fedmi.shared import contract
from fedmi.shared.instructions import EvaluateInstruction, ExternalInstruction, OodQuery
from fedmi.shared.model import build_model, federated_state_dict
from fedmi.shared.ood import describe


def test_ood_statistics_then_external_extras(tiny_fdg, tmp_path, ingested):
    torch.manual_seed(0)
    state = federated_state_dict(build_model())
    arrays = contract.array_record(state)
    ingested(tiny_fdg / "site-a", tmp_path / "site-a")
    site = resolve_site(
        {
            "data-dir": str(tiny_fdg / "site-a"),
            "state-dir": str(tmp_path / "site-a"),
            "min-cell-count": 1,
        },
        {},
    )
    reply = check_outbound(
        contract.OOD_STATS, handle_ood_statistics(site, arrays, OodQuery(task="fdg-ad"))
    )
    metrics = dict(reply[contract.METRICS])
    assert reply[contract.SITE]["status"] == "ok"
    stats = statistics_from_metrics(metrics)
    # the default (regional) model's features: one per atlas region
    assert stats is not None and stats.dim == build_model().backbone.encoder[0].num_regions
    assert int(stats.counts.sum()) == metrics["num-examples"] > 0
    external = ExternalInstruction(task="fdg-ad", mc_passes=3, ood=describe(stats))
    out = handle_evaluate(site, arrays, ExternalInstruction.from_record(external.to_record()))
    check_outbound(contract.EXTERNAL, out)
    m = dict(out[contract.METRICS])
    labels = list(csv.DictReader((tiny_fdg / "site-a" / "labels.csv").open()))
    n_mci = sum(r["label"].startswith("MCI") for r in labels)
    assert m["bio-num-examples"] == n_mci
    if out[contract.SITE]["status"] == "ok":
        assert m["mc-passes"] == 3 and len(m["referral-retained"]) == len(contract.REFERRAL_RATES)
        assert m["referral-retained"][0] == m["num-examples"]
    assert sum(m["ood-hist"]) == m["ood-num-examples"] == m["num-examples"]
    # the per-round evaluation carries none of it
    plain = dict(
        handle_evaluate(site, arrays, EvaluateInstruction(task="fdg-ad"))[contract.METRICS]
    )
    assert not any(k.startswith(("mc-", "ood-", "bio-", "referral-")) for k in plain)
    holdout = resolve_site(
        {"data-dir": str(tiny_fdg / "site-c"), "state-dir": str(tmp_path / "site-c")}, {}
    )
    refused = handle_ood_statistics(holdout, arrays, OodQuery(task="fdg-ad"))
    assert refused[contract.SITE]["status"] == "no-data"
    assert np.isfinite(list(m["ood-hist"])).all()
