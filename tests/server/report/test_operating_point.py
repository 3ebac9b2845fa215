"""report.json ``operating_point`` and the model card's: chosen on the training sites'
histograms as they come through ingress, applied at every site."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import ConfigRecord, Message, MetricRecord, RecordDict

from fedmi.server.federation.external import _record_reply
from fedmi.server.history import RunHistory, SiteInfo
from fedmi.server.report.operating_point import federated_choice, operating_point_section
from fedmi.shared import contract
from fedmi.shared.run_config import RunConfig, RunConfigError

BINS = contract.HIST_BINS


def _hist(cells: dict[int, int]) -> list[int]:
    h = [0] * BINS
    for i, n in cells.items():
        h[i] = n
    return h


def _reply(node: int, site: str, role: str, hp: list, hn: list, pool: bool = False) -> Message:
    """An ``evaluate.external`` reply; ``pool``: a DP site below its min cell count, whose
    noisy histograms come as ``pool-hist-*`` with status ``suppressed``."""
    instr = Message(content=RecordDict(), dst_node_id=node, message_type=contract.EXTERNAL)
    prefix = "pool-" if pool else ""
    metrics = {
        "num-examples": int(sum(hp) + sum(hn)) if all(v >= 0 for v in hp + hn) else 10,
        "num-positive": 5,
        f"{prefix}hist-pos": hp,
        f"{prefix}hist-neg": hn,
    }
    status = "suppressed" if pool else "ok"
    if not pool and len(hp) == BINS and len(hn) == BINS:  # the confusion counts a site derives
        cuts = [round(t * BINS) for t in contract.THRESHOLDS]
        metrics["tp"] = [sum(hp[c:]) for c in cuts]
        metrics["fp"] = [sum(hn[c:]) for c in cuts]
        metrics["tn"] = [sum(hn[:c]) for c in cuts]
        metrics["fn"] = [sum(hp[:c]) for c in cuts]
    content = RecordDict(
        {
            contract.METRICS: MetricRecord(metrics),
            contract.SITE: ConfigRecord({"site-id": site, "role": role, "status": status}),
        }
    )
    return Message(content, reply_to=instr)


def _history(
    flower_identity, replies: list[tuple[str, str, list, list]], pool: tuple[str, ...] = ()
) -> RunHistory:
    history = RunHistory()
    answered: set[int] = set()
    for node, (site, role, hp, hn) in enumerate(replies, start=1):
        history.sites[node] = SiteInfo(node, site, role, "ok", num_examples=40)
        flower_identity.node_id = 0
        reply = _reply(node, site, role, hp, hn, pool=site in pool)
        _record_reply(reply, history, answered, 100_000)
    return history


GOOD = [
    # train-a: negatives at .20–.29, positives at .60–.69: any cut 0.30..0.60 separates
    ("train-a", "train", _hist({62: 10}), _hist({25: 10})),
    # train-b: one positive low (bin 35), one negative high (bin 30)
    ("train-b", "train", _hist({35: 1, 70: 9}), _hist({20: 9, 30: 1})),
    ("hold-c", "holdout", _hist({40: 4, 80: 6}), _hist({10: 8, 45: 2})),
]


def test_choice_from_training_sites_applied_everywhere(flower_identity):
    history = _history(flower_identity, GOOD)
    cfg = RunConfig()
    card = federated_choice(cfg, history)
    # pooled train: J = 1 for cuts 0.31..0.35 only; of that plateau the cut nearest 0.5
    assert card["criterion"] == "youden"
    assert card["threshold"] == pytest.approx(0.35)
    assert card["chosen_on"]["sites"] == ["train-a", "train-b"]
    section = operating_point_section(cfg, history)
    hold = next(s for s in section["per_site"] if s["site_id"] == "hold-c")
    # at 0.35 hold-c: every positive (bins 40, 80) above, the two negatives at bin 45 too
    assert hold["sensitivity"]["value"] == pytest.approx(1.0)
    assert hold["specificity"]["value"] == pytest.approx(0.8)
    assert hold["ppv"]["n"] == 12 and hold["npv"]["n"] == 8
    assert hold["balanced_accuracy"] == pytest.approx(0.9)
    assert hold["best_balanced_accuracy"] == pytest.approx(0.9)
    assert set(hold["calibration"]) >= {"ece", "slope", "citl"}
    assert section["pooled"]["holdout"]["sensitivity"]["n"] == 10


def test_target_specificity_setting(flower_identity):
    history = _history(flower_identity, GOOD)
    cfg = RunConfig.from_mapping({"operating-point": "specificity", "operating-point-target": 0.99})
    card = federated_choice(cfg, history)
    # specificity 1.0 first reached above the negative at bin 30: cut 0.31
    assert card["threshold"] == pytest.approx(0.31) and card["target"] == 0.99


@pytest.mark.parametrize(
    ("mapping", "needle"),
    [
        ({"operating-point": "accuracy"}, "operating-point"),
        ({"operating-point-target": 1.0}, "operating-point-target"),
        ({"operating-point-taregt": 0.9}, "operating-point-taregt"),
    ],
)
def test_bad_settings_refused(mapping, needle):
    with pytest.raises(RunConfigError, match=needle):
        RunConfig.from_mapping(mapping)


@pytest.mark.parametrize(
    ("hp", "hn"),
    [
        (_hist({62: 500}), _hist({25: -490})),  # negative counts
        (_hist({62: 500})[:50], _hist({25: 10})[:50]),  # wrong shape
    ],
)
def test_a_forged_training_histogram_is_refused_at_ingress(flower_identity, hp, hn):
    """A training site trying to drag the threshold with an ill-formed histogram is
    refused at ingress: listed as missing, and the choice is the honest sites' alone."""
    forged = [("train-x", "train", hp, hn)]
    history = _history(flower_identity, GOOD + forged)
    assert any(m["site_id"] == "train-x" for m in history.missing_final)
    card = federated_choice(RunConfig(), history)
    assert card["chosen_on"]["sites"] == ["train-a", "train-b"]
    assert card["threshold"] == pytest.approx(0.35)


def test_dp_sites_below_k_count_in_the_pooled_choice_only(flower_identity):
    """Under DP a training site below its min cell count sends its noisy histograms as
    pool-hist-*: they enter the pooled threshold (the same one as if sent in full) and
    nothing of that site is reported from them."""
    history = _history(flower_identity, GOOD, pool=("train-b",))
    assert not history.missing_final
    card = federated_choice(RunConfig(), history)
    assert card["threshold"] == pytest.approx(0.35)  # the sum is the same as with GOOD
    assert card["chosen_on"]["sites"] == ["train-a", "train-b"]
    assert card["chosen_on"]["pooled_only_sites"] == ["train-b"]
    assert card["chosen_on"]["n_positive"] == 20 and card["chosen_on"]["n_negative"] == 20
    section = operating_point_section(RunConfig(), history)
    assert {s["site_id"] for s in section["per_site"]} == {"train-a", "hold-c"}
    assert section["pooled"]["train"]["sensitivity"]["n"] == 10  # train-a's alone
    # all training sites pooled-only: still a choice, not the fixed fallback
    only = _history(flower_identity, GOOD, pool=("train-a", "train-b"))
    assert federated_choice(RunConfig(), only)["threshold"] == pytest.approx(0.35)


def test_histograms_dominated_by_dp_noise_fall_back_to_fixed(flower_identity):
    """DP noise clipped at 0 adds counts to every empty bin: histograms holding far more
    counts than the scans the sites scored choose nothing and say why."""
    noisy = [(site, role, [v + 3 for v in hp], [v + 3 for v in hn]) for site, role, hp, hn in GOOD]
    history = _history(flower_identity, noisy, pool=("train-a", "train-b"))
    for raw in history.final_raw.values():  # the scans scored (public), not the noisy mass
        raw["num-examples"] = 40
    card = federated_choice(RunConfig(), history)
    assert card["criterion"] == "fixed" and card["threshold"] == 0.5
    assert card["reason"].startswith("the training sites' histograms hold 1240 counts for 80")
    assert "DP noise dominates" in card["reason"]


def test_a_forged_pooled_only_histogram_is_refused_at_ingress(flower_identity):
    forged = [("train-x", "train", _hist({62: 500}), _hist({25: -490}))]
    history = _history(flower_identity, GOOD + forged, pool=("train-x",))
    assert any(m["site_id"] == "train-x" for m in history.missing_final)
    assert federated_choice(RunConfig(), history)["chosen_on"]["pooled_only_sites"] == []


def test_no_training_histograms_falls_back_to_fixed(flower_identity):
    history = _history(flower_identity, GOOD[2:])
    card = federated_choice(RunConfig(), history)
    assert card == {
        "threshold": 0.5,
        "criterion": "fixed",
        "target": None,
        "reason": "no training site released score histograms of both classes",
    }
    hold = operating_point_section(RunConfig(), history)["per_site"][0]
    assert hold["threshold"] == 0.5 and hold["sensitivity"]["value"] == pytest.approx(0.6)
    assert np.isfinite(hold["calibration"]["ece"])


def test_at_a_released_threshold_the_sites_own_counts_are_used(flower_identity):
    """A holdout's histogram merged to ≥ k scans per cell puts a whole cell on one side of
    0.5; its own confusion counts at 0.5 (released from its unbinned scores) are the truth.
    The report uses them (``counts: "site"``), pooled too; at a threshold that is not one of
    the released ones it reads the histograms and says so."""
    merged = [
        # two training sites whose cells tie Youden from 0.31 to 0.80: the threshold is 0.5
        ("train-a", "train", _hist({80: 12}), _hist({30: 11})),
        ("train-b", "train", _hist({70: 10}), _hist({20: 10})),
        # the holdout's merged cells: 20 positives at 0.48 (their mean), 10 negatives at 0.45
        ("hold-c", "holdout", _hist({48: 20}), _hist({45: 10})),
    ]
    history = _history(flower_identity, merged)
    # what hold-c counted on its own scores at 0.5: 18 of 20 positives, 9 of 10 negatives right
    raw = history.final_raw["hold-c"]
    i = contract.THRESHOLDS.index(0.5)
    for key, value in (("tp", 18), ("fn", 2), ("tn", 9), ("fp", 1)):
        raw[key] = list(raw[key])
        raw[key][i] = value
    section = operating_point_section(RunConfig(), history)
    assert section["threshold"] == pytest.approx(0.5)
    hold = next(s for s in section["per_site"] if s["site_id"] == "hold-c")
    assert hold["counts"] == "site"
    assert hold["sensitivity"]["value"] == pytest.approx(0.9)  # 0.0 from the merged cells
    assert hold["specificity"]["value"] == pytest.approx(0.9)
    assert section["pooled"]["holdout"]["counts"] == "site"
    assert section["pooled"]["holdout"]["sensitivity"]["successes"] == 18
    # malformed counts are not used: the histogram is read and the entry says so
    raw["tp"] = raw["tp"][:3]
    hold = next(
        s
        for s in operating_point_section(RunConfig(), history)["per_site"]
        if s["site_id"] == "hold-c"
    )
    assert hold["counts"] == "histogram" and hold["sensitivity"]["value"] == 0.0
    # GOOD's threshold 0.35 is not a released threshold: histograms
    good = operating_point_section(RunConfig(), _history(flower_identity, GOOD))
    assert {s["counts"] for s in good["per_site"]} == {"histogram"}
