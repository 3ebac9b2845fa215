"""``evaluate`` and ``evaluate.external``: score the received model and release statistics.

A training site evaluates on its test split, a holdout site on all its scans. Only the
declared statistics of :mod:`fedmi.client.evaluation.statistics` leave (small cells
suppressed); the final ``evaluate.external`` round adds uncertainty, OOD and biomarker
aggregates (:mod:`fedmi.client.evaluation.external`).
"""

from __future__ import annotations

import logging

from flwr.app import ArrayRecord, MetricRecord, RecordDict

from fedmi.client.data import site_data
from fedmi.client.evaluation.external import external_extras, extra_mechanisms
from fedmi.client.evaluation.private import EVALUATION_MECHANISMS, private_evaluation
from fedmi.client.evaluation.statistics import evaluate_site
from fedmi.client.harmonization.adaptation import site_model
from fedmi.client.privacy.release import ReleaseRefused, open_release
from fedmi.client.privacy.settings import PrivacySettings
from fedmi.client.replies import site_record, status_reply, to_state
from fedmi.client.site.settings import SiteSettings
from fedmi.client.training.loop import predict
from fedmi.shared import contract
from fedmi.shared.instructions import EvaluateInstruction, ExternalInstruction

log = logging.getLogger(__name__)


def evaluated_split(site: SiteSettings) -> str:
    """Which scans a site evaluates: a training site its test split, a holdout all of them."""
    return "test" if site.role == "train" else "all"


def handle_evaluate(
    site: SiteSettings,
    arrays: ArrayRecord,
    ins: EvaluateInstruction | ExternalInstruction,
    *,
    privacy: PrivacySettings | None = None,
    run_id: int | str = "local",
) -> RecordDict:
    """Evaluate the received weights and reply with the declared statistics.

    With DP on (``privacy.dp``) the statistics are released through the Gaussian
    mechanisms of :mod:`fedmi.client.evaluation.private`, charged first under the site's
    query policy (:func:`fedmi.client.privacy.release.open_release`); a refused release
    replies with its status (``refused``, ``budget-exhausted``, ``ledger-error``).
    """
    data = site_data(site, ins.task, ins.seed)
    which = evaluated_split(site)
    if len(data.subset(which)[1]) == 0:
        return status_reply(site, ins.task, "no-data")
    model, x, y, used = site_model(site, ins, to_state(arrays), data, which)
    external = isinstance(ins, ExternalInstruction)
    release = None
    if privacy is not None and privacy.dp:
        mechanisms = dict(EVALUATION_MECHANISMS)
        if external:
            mechanisms |= extra_mechanisms(ins, harmonized=used is not None)  # type: ignore[arg-type]
        try:
            release = open_release(
                site, privacy, run_id=str(run_id), kind=ins.message_type, mechanisms=mechanisms
            )
        except ReleaseRefused as exc:
            level = logging.INFO if exc.status == "refused" else logging.WARNING
            log.log(level, "%s not released: %s", ins.message_type, exc)
            return status_reply(site, ins.task, exc.status)
    if release is None:
        stats, status = evaluate_site(model, x, y, site.min_cell_count)  # small cells merged
    else:
        stats, status = private_evaluation(
            predict(model, x), y.numpy(), release, site.min_cell_count
        )
        stats["epsilon"] = release.epsilon
    if external:  # uncertainty, OOD scores, MCI biomarker
        extras = external_extras(
            site,
            ins,
            model,
            x,
            y,
            harmonized=used is not None,
            release=release,  # type: ignore[arg-type]
        )
        stats.update(extras)
    reply = RecordDict(
        {
            contract.METRICS: MetricRecord(stats),  # type: ignore[arg-type]
            contract.SITE: site_record(site, ins.task, status),
        }
    )
    if used is not None:  # fedbn/fedmi: which local layers the site evaluated with
        reply[contract.SITE]["harmonization"] = used  # type: ignore[index]
    return reply
