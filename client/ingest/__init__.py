"""DICOM ingest of a hospital site: series discovery, SUV, template grid, cache and report.

Public API
----------
:func:`client.ingest.pipeline.ingest_site`
    the whole site folder → ``STATE_DIR`` (cache, ``ingest_report.json``, manifest).
:func:`client.ingest.series.load_series`
    the pure per-series step: files → :class:`~client.ingest.volume.NativeSeries`.
:func:`client.ingest.template.to_template`
    native volume → task grid (head-position correction, anti-aliasing, SUVR).
:func:`client.ingest.report.load_accepted`
    accepted rows of the last ingest, for training.
"""

from __future__ import annotations

from client.ingest.errors import REASONS, IngestError
from client.ingest.version import PIPELINE_VERSION

__all__ = ["PIPELINE_VERSION", "REASONS", "IngestError"]
