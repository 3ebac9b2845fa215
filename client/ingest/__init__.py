"""DICOM ingest of a hospital site: series discovery, SUV, template grid, cache and report.

Public API
----------
:func:`fedmi.client.ingest.pipeline.ingest_site`
    the whole site folder → ``STATE_DIR`` (cache, ``ingest_report.json``, manifest).
:func:`fedmi.client.ingest.series.load_series`
    the pure per-series step: files → :class:`~fedmi.client.ingest.volume.NativeSeries`.
:func:`fedmi.client.ingest.template.to_template`
    native volume → task grid (head-position correction, anti-aliasing, SUVR).
:func:`fedmi.client.ingest.report.load_accepted`
    accepted rows of the last ingest, for training.
"""

from __future__ import annotations

from fedmi.client.ingest.errors import REASONS, IngestError
from fedmi.client.ingest.version import PIPELINE_VERSION

__all__ = ["PIPELINE_VERSION", "REASONS", "IngestError"]
