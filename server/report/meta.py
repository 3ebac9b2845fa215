"""Random-effects meta-analysis of per-site estimates (DerSimonian–Laird).

Used for the sites' AUCs: each site sends its histogram AUC and the standard error it
computed on its own scores (DeLong); the coordinator pools them here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats

Z95 = float(stats.norm.ppf(0.975))


@dataclass(frozen=True)
class MetaAnalysis:
    """Fixed- and random-effects pooled estimates with heterogeneity.

    Attributes
    ----------
    k
        Number of studies (sites).
    fixed, fixed_se
        Inverse-variance fixed-effect estimate and its standard error.
    estimate, se, ci_low, ci_high
        DerSimonian–Laird random-effects estimate, its standard error and 95 % interval
        (normal quantile, as in statsmodels' ``combine_effects``).
    tau2
        Between-site variance (DL moment estimator, truncated at 0).
    q, q_pvalue
        Cochran's Q and its χ²(k − 1) p-value.
    i2
        Higgins' I² = max(0, (Q − df) / Q).
    pi_low, pi_high
        95 % prediction interval for a new site's true value (Higgins, Thompson &
        Spiegelhalter 2009): ``estimate ± t_{k−2} · sqrt(tau2 + se²)``; ``None`` when
        k < 3.
    """

    k: int
    fixed: float
    fixed_se: float
    estimate: float
    se: float
    ci_low: float
    ci_high: float
    tau2: float
    q: float
    q_pvalue: float
    i2: float
    pi_low: float | None
    pi_high: float | None

    def as_dict(self) -> dict[str, float | int | None]:
        return asdict(self)


def dersimonian_laird(effects: Sequence[float], variances: Sequence[float]) -> MetaAnalysis:
    """Pool ``effects`` with within-study ``variances`` by DerSimonian & Laird (1986).

    Raises
    ------
    ValueError
        With fewer than two studies or a non-positive variance.
    """
    y = np.asarray(effects, dtype=np.float64)
    v = np.asarray(variances, dtype=np.float64)
    k = int(y.size)
    if k < 2 or v.size != k:
        raise ValueError("a meta-analysis needs at least two estimates, each with a variance")
    if not np.all(v > 0):
        raise ValueError("every variance must be positive")
    w = 1.0 / v
    fixed = float((w * y).sum() / w.sum())
    q = float((w * (y - fixed) ** 2).sum())
    df = k - 1
    c = float(w.sum() - (w**2).sum() / w.sum())
    tau2 = max(0.0, (q - df) / c) if c > 0 else 0.0
    wr = 1.0 / (v + tau2)
    est = float((wr * y).sum() / wr.sum())
    se = float(math.sqrt(1.0 / wr.sum()))
    i2 = max(0.0, (q - df) / q) if q > 0 else 0.0
    pi_low = pi_high = None
    if k >= 3:
        half = float(stats.t.ppf(0.975, k - 2)) * math.sqrt(tau2 + se**2)
        pi_low, pi_high = est - half, est + half
    return MetaAnalysis(
        k=k,
        fixed=fixed,
        fixed_se=float(math.sqrt(1.0 / w.sum())),
        estimate=est,
        se=se,
        ci_low=est - Z95 * se,
        ci_high=est + Z95 * se,
        tau2=float(tau2),
        q=q,
        q_pvalue=float(stats.chi2.sf(q, df)),
        i2=float(i2),
        pi_low=pi_low,
        pi_high=pi_high,
    )
