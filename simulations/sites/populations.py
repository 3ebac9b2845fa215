"""Site populations per task: clinical group mix and label noise (PHANTOM_SPEC §5)."""

from __future__ import annotations

#: Clinical group probabilities of each population type, per task (PHANTOM_SPEC §5).
POPULATIONS: dict[str, dict[str, dict[str, float]]] = {
    "fdg-ad": {
        "community": {"CN": 0.55, "MCI": 0.20, "AD": 0.25},
        "research": {"CN": 0.40, "MCI": 0.25, "AD": 0.35},
        "memory-clinic": {"CN": 0.25, "MCI": 0.30, "AD": 0.45},
    },
    "amyloid": {
        "community": {"CN": 0.70, "MCI": 0.20, "AD": 0.10},
        "research": {"CN": 0.45, "MCI": 0.35, "AD": 0.20},
        "memory-clinic": {"CN": 0.25, "MCI": 0.40, "AD": 0.35},
    },
    "dat-pd": {
        "community": {"HC": 0.50, "PD": 0.50},
        "research": {"HC": 0.33, "PD": 0.67},
        "movement-clinic": {"HC": 0.20, "PD": 0.80},
    },
}

#: Label noise per task and population: fdg-ad = clinical AD without AD pathology,
#: amyloid = read flips, dat-pd = SWEDD among clinical PD.
LABEL_NOISE = {
    "fdg-ad": {"community": 0.10, "research": 0.05, "memory-clinic": 0.08},
    "amyloid": {"community": 0.04, "research": 0.03, "memory-clinic": 0.05},
    "dat-pd": {"community": 0.12, "research": 0.10, "movement-clinic": 0.10},
}
