"""The ingest pipeline version: part of every cache key, so a change here re-does every series."""

from __future__ import annotations

#: Bump whenever a change alters cached volumes or report rows.
PIPELINE_VERSION = "2.1"
