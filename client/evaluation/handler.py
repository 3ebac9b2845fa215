"""``evaluate`` and ``evaluate.external``: score the received model and release statistics.

A training site evaluates on its test split, a holdout site on all its scans. Only the
declared statistics of :mod:`fedmi.client.evaluation.statistics` leave (small cells
suppressed); the final ``evaluate.external`` round adds uncertainty, OOD and biomarker
aggregates (:mod:`fedmi.client.evaluation.external`).
"""

from __future__ import annotations

from flwr.app import ArrayRecord, MetricRecord, RecordDict

from fedmi.client.data import site_data
from fedmi.client.evaluation.external import external_extras
from fedmi.client.evaluation.statistics import evaluate_site
from fedmi.client.harmonization.adaptation import site_model
from fedmi.client.replies import site_record, status_reply, to_state
from fedmi.client.site.settings import SiteSettings
from fedmi.shared import contract
from fedmi.shared.instructions import EvaluateInstruction, ExternalInstruction


def evaluated_split(site: SiteSettings) -> str:
    """Which scans a site evaluates: a training site its test split, a holdout all of them."""
    return "test" if site.role == "train" else "all"


def handle_evaluate(
    site: SiteSettings, arrays: ArrayRecord, ins: EvaluateInstruction | ExternalInstruction
) -> RecordDict:
    """Evaluate the received weights and reply with the declared statistics."""
    data = site_data(site, ins.task, ins.seed)
    which = evaluated_split(site)
    if len(data.subset(which)[1]) == 0:
        return status_reply(site, ins.task, "no-data")
    model, x, y, used = site_model(site, ins, to_state(arrays), data, which)
    stats, status = evaluate_site(model, x, y, site.min_cell_count)  # small cells suppressed
    if isinstance(ins, ExternalInstruction):  # uncertainty, OOD scores, MCI biomarker
        stats.update(external_extras(site, ins, model, x, y, harmonized=used is not None))
    reply = RecordDict(
        {
            contract.METRICS: MetricRecord(stats),  # type: ignore[arg-type]
            contract.SITE: site_record(site, ins.task, status),
        }
    )
    if used is not None:  # fedbn/fedmi: which local layers the site evaluated with
        reply[contract.SITE]["harmonization"] = used  # type: ignore[index]
    return reply
