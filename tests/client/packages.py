"""The model card the client tests sign into their packages (one place)."""

from __future__ import annotations

from fedmi.server.report.document import architecture

TASK = "fdg-ad"


def test_card(model, threshold: float = 0.4) -> dict:
    """A minimal fdg-ad model card for ``model`` with its operating point at ``threshold``."""
    return {
        "task": TASK,
        "description": "test",
        "modality": "PT",
        "tracers": ["fdg"],
        "classes": {"negative": "CN", "positive": "AD"},
        "architecture": architecture(model.spec, model.backbone),
        "operating_point": {"threshold": threshold},
    }


test_card.__test__ = False  # a helper, not a test
