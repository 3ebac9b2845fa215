"""``query``: who the site is and how many labelled scans it has (no weights, no training).

The reply carries the site's pseudonym and role, its labelled-scan counts and split, and
its scans per tracer / manufacturer / model with the small-cell rule applied
(:func:`fedmi.client.evaluation.statistics.data_inventory`).
"""

from __future__ import annotations

import math

import numpy as np
from flwr.app import ConfigRecord, MetricRecord, RecordDict

from fedmi.client.data import site_data
from fedmi.client.evaluation.statistics import data_inventory, inventory_counts
from fedmi.client.privacy.release import Release, ReleaseRefused, open_release
from fedmi.client.privacy.settings import PrivacySettings
from fedmi.client.replies import site_record, status_reply
from fedmi.client.site.settings import SiteSettings
from fedmi.shared import contract
from fedmi.shared.instructions import QueryInstruction

#: mechanisms of a query release: the positives, the scans per category
QUERY_MECHANISMS = {"count": 0.4, "inventory": 0.6}
#: a category is released when its noisy count clears this many noise sds above one scan
#: (a one-scan category then passes with probability below 1e-5: the stable-histogram rule)
CATEGORY_Z = 4.27


def handle_query(
    site: SiteSettings,
    ins: QueryInstruction,
    *,
    privacy: PrivacySettings | None = None,
    run_id: int | str = "local",
) -> RecordDict:
    """Site facts and counts for the coordinator's ``query``.

    The sizes (scans, train and test split) are public; with DP on, the positives and the
    scans per category are released through Gaussian mechanisms (a category only when its
    noisy count clears both the site's small-cell k and :data:`CATEGORY_Z` noise sds above
    one scan), charged under the site's query policy.
    """
    data = site_data(site, ins.task, ins.seed)
    n_test = int(data.is_test.sum())
    metrics = MetricRecord(
        {
            "num-examples": len(data),
            "num-train": len(data) - n_test,
            "num-test": n_test,
            "num-positive": int(data.y.sum()),
            "min-cell-count": site.min_cell_count,
        }
    )
    if privacy is not None and privacy.dp:
        try:
            release = open_release(
                site,
                privacy,
                run_id=str(run_id),
                kind=ins.message_type,
                mechanisms=QUERY_MECHANISMS,
            )
        except ReleaseRefused as exc:
            return status_reply(site, ins.task, exc.status)
        positives = release.gaussian("count", int(data.y.sum()))
        metrics["num-positive"] = int(np.clip(np.rint(positives), 0, len(data)))
        metrics["epsilon"] = release.epsilon
        inventory, withheld = private_inventory(site, release)
    else:
        inventory, withheld = data_inventory(site.cache_dir, site.min_cell_count)
    metrics["suppressed-cells"] = withheld
    content = RecordDict(
        {contract.METRICS: metrics, contract.SITE: site_record(site, ins.task, "ok")}
    )
    if inventory:
        content[contract.INVENTORY] = ConfigRecord(inventory)  # type: ignore[arg-type]
    return content


def private_inventory(site: SiteSettings, release: Release) -> tuple[dict[str, list], int]:
    """Noisy scans per category (sensitivity √3: one scan counts once in each field)."""
    sensitivity = math.sqrt(len(contract.INVENTORY_FIELDS))
    threshold = max(site.min_cell_count, 1 + CATEGORY_Z * release.sd("inventory", sensitivity))
    record: dict[str, list] = {}
    withheld = 0
    for field, counts in inventory_counts(site.cache_dir).items():
        names = sorted(counts)
        noisy = release.gaussian("inventory", [counts[n] for n in names], sensitivity)
        kept = {n: int(round(v)) for n, v in zip(names, noisy, strict=True) if v >= threshold}
        withheld += len(names) - len(kept)
        record[f"{field}-names"] = list(kept)
        record[f"{field}-counts"] = list(kept.values())
    return record, withheld
