"""Validate a report.json document against server/report/report.schema.json."""

from __future__ import annotations

import json

import jsonschema

from fedmi.server.report.document import REPORT_SCHEMA


def assert_valid_report(report: dict) -> None:
    """Every schema violation of ``report`` (round-tripped through JSON), listed."""
    schema = json.loads(REPORT_SCHEMA.read_text())
    validator = jsonschema.Draft202012Validator(schema)
    doc = json.loads(json.dumps(report))
    errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(
        f"{'/'.join(map(str, e.absolute_path))}: {e.message[:200]}" for e in errors[:20]
    )
