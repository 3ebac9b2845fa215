"""The research-use statement every result fedmi writes at a site carries (one place)."""

from __future__ import annotations

RESEARCH_USE = (
    "Research use only. Not a medical device; not for diagnosis or treatment decisions. "
    "The result must be read by a nuclear-medicine physician together with the images."
)
