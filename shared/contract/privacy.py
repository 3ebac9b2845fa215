"""The privacy class of every message type: what a reply releases, how, and what it costs.

A site with DP on (the default) releases nothing data-derived except through a formal
mechanism charged to its privacy ledger (:mod:`fedmi.client.privacy.release`):

==================  ================================================  =======================
message type        releases                                          mechanism
==================  ================================================  =======================
``train``           federated weights                                 DP-SGD (Opacus), each
                                                                      step charged
``train.pretrain``  federated encoder and decoder weights after       DP-SGD (Opacus), each
                    masked-image pretraining (no labels)              step charged
``query``           labelled positives; scans per tracer/scanner     Gaussian on counts
``evaluate``        score histograms per class, the Mann–Whitney     Gaussian on counts and
``evaluate.         AUC (and, external, MC-dropout calibration,       on the AUC (sensitivity
external``          referral, OOD-score and biomarker histograms)     1/m after a noisy count)
``query.features``  per-class embedding sums and squares             Gaussian on clipped sums
``query.ood``       per-class embedding sums and outer products      Gaussian on clipped sums
``query.            normal scans' design sums XᵀX, XᵀY, Σy² and       Gaussian on clipped sums
normative``         count (age, sex, regional profile)
``evaluate.         anomaly-score histograms per group, normals'      Gaussian on counts and
normative``         false-positive fractions, pattern matches,        bounded sums
                    classifier calls
==================  ================================================  =======================

Everything else in a reply is either **public** — facts the site states about itself that do
not depend on any patient's data beyond how many scans it has (pseudonym, role, status,
``num-examples`` and the split sizes, epochs and steps, timings, the privacy spend itself):
dataset sizes are public, as in DP-SGD's own accounting — or **derived**: computed at the site
from the noisy values only (confusion counts and calibration bins from the noisy
histogram, intervals from the noisy AUC and counts), which costs nothing more
(post-processing). The adjacency is add/remove one scan.

Each Gaussian mechanism of a release adds noise of standard deviation ``σ·Δ`` (``Δ`` its L2
sensitivity); its Rényi-DP cost is that of a Gaussian with noise multiplier ``σ``, so the k
mechanisms of one reply are charged as one ledger entry with multiplier
``(Σ σᵢ⁻²)^(-1/2)`` (``sample_rate`` 1, one step), composed with DP-SGD by the same RDP
accountant. The noise is drawn from the operating system's randomness: no seed the
coordinator chooses decides what is measured.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from fedmi.shared.contract.records import (
    EVALUATE,
    EXTERNAL,
    FEATURES,
    NORMATIVE_EVAL,
    NORMATIVE_STATS,
    OOD_STATS,
    PRETRAIN,
    QUERY,
    TRAIN,
)


@dataclass(frozen=True)
class PrivacyClass:
    """What a message type releases, under which mechanism, and whether it is charged."""

    message_type: str
    releases: str
    mechanism: str
    charged: bool = True


PRIVACY_CLASSES: dict[str, PrivacyClass] = {
    c.message_type: c
    for c in (
        PrivacyClass(TRAIN, "federated weights", "DP-SGD (Poisson sampling, clipping, noise)"),
        PrivacyClass(
            PRETRAIN,
            "federated encoder and decoder weights (masked-image pretraining)",
            "DP-SGD (Poisson sampling, clipping, noise)",
        ),
        PrivacyClass(QUERY, "positives; scans per tracer, manufacturer, model", "Gaussian"),
        PrivacyClass(EVALUATE, "score histograms, AUC", "Gaussian"),
        PrivacyClass(
            EXTERNAL, "score, calibration, referral, OOD and biomarker histograms; AUC", "Gaussian"
        ),
        PrivacyClass(FEATURES, "embedding moments overall and per class", "Gaussian"),
        PrivacyClass(OOD_STATS, "per-class embedding sums and outer products", "Gaussian"),
        PrivacyClass(NORMATIVE_STATS, "normal scans' design and regional-profile sums", "Gaussian"),
        PrivacyClass(
            NORMATIVE_EVAL,
            "anomaly-score histograms, normals' false-positive fractions, matches, calls",
            "Gaussian",
        ),
    )
}

#: Ledger kinds charged as DP-SGD steps ``(σ, q, steps)`` — not statistic releases: they are
#: planned per run from the budget (``client/privacy/rounds.py``) and never count towards
#: the release policy or the release ρ (:mod:`fedmi.client.privacy.release`).
DP_SGD_KINDS: frozenset[str] = frozenset({TRAIN, PRETRAIN})

#: How a site with DP on divides the part of its budget kept for releases (zCDP ρ) among
#: the release kinds of one run (each kind's share is spread over its per-run cap).
RELEASE_WEIGHTS: dict[str, float] = {
    EXTERNAL: 0.6,
    QUERY: 0.1,
    OOD_STATS: 0.15,
    FEATURES: 0.15,
    NORMATIVE_STATS: 0.3,
    NORMATIVE_EVAL: 0.2,
    EVALUATE: 0.0,
}

#: L2 bound an embedding is clipped to before its sums are released (the regional model's
#: standardised regional ratios; the CNN's features are scaled to it as well).
FEATURE_CLIP_NORM = 10.0


def composed_noise_multiplier(multipliers: list[float]) -> float:
    """One Gaussian equivalent to several applied to the same data: ``(Σ σᵢ⁻²)^(-1/2)``."""
    total = sum(1.0 / (s * s) for s in multipliers)
    return math.inf if total == 0 else 1.0 / math.sqrt(total)


def rho_of(noise_multiplier: float) -> float:
    """zCDP ρ of a Gaussian mechanism with multiplier σ: ``1 / (2σ²)``."""
    return 0.0 if math.isinf(noise_multiplier) else 1.0 / (2.0 * noise_multiplier**2)


def multiplier_for(rho: float) -> float:
    """The Gaussian noise multiplier whose zCDP is ``rho``."""
    return math.inf if rho <= 0 else 1.0 / math.sqrt(2.0 * rho)


def rho_for_epsilon(epsilon: float, delta: float) -> float:
    """The largest zCDP ρ whose (ε, δ) conversion ``ρ + 2√(ρ ln 1/δ)`` stays within ε."""
    root = -math.sqrt(math.log(1.0 / delta)) + math.sqrt(math.log(1.0 / delta) + epsilon)
    return max(0.0, root) ** 2
