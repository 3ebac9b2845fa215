"""``query``: who the site is and how many labelled scans it has (no weights, no training).

The reply carries the site's pseudonym and role, its labelled-scan counts and split, and
its scans per tracer / manufacturer / model with the small-cell rule applied
(:func:`fedmi.client.evaluation.statistics.data_inventory`).
"""

from __future__ import annotations

from flwr.app import ConfigRecord, MetricRecord, RecordDict

from fedmi.client.data import site_data
from fedmi.client.evaluation.statistics import data_inventory
from fedmi.client.replies import site_record
from fedmi.client.site.settings import SiteSettings
from fedmi.shared import contract
from fedmi.shared.instructions import QueryInstruction


def handle_query(site: SiteSettings, ins: QueryInstruction) -> RecordDict:
    """Site facts and counts for the coordinator's ``query``."""
    data = site_data(site, ins.task, ins.seed)
    n_test = int(data.is_test.sum())
    inventory, withheld = data_inventory(site.cache_dir, site.min_cell_count)
    metrics = MetricRecord(
        {
            "num-examples": len(data),
            "num-train": len(data) - n_test,
            "num-test": n_test,
            "num-positive": int(data.y.sum()),
            "min-cell-count": site.min_cell_count,
            "suppressed-cells": withheld,
        }
    )
    content = RecordDict(
        {contract.METRICS: metrics, contract.SITE: site_record(site, ins.task, "ok")}
    )
    if inventory:
        content[contract.INVENTORY] = ConfigRecord(inventory)  # type: ignore[arg-type]
    return content
