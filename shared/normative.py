"""The federated normative model of regional uptake in the aging brain.

Clinical neuro-PET software (NEUROSTAT/3D-SSP, CortexID, MIMneuro) reads a scan as z-scores
against an age-matched database of normal scans. fedmi builds that database across the
federation without moving a scan: a linear mixed model per atlas region, in the spirit of
the hierarchical Bayesian regression normative models of PCNtoolkit (Kia et al. 2020,
2021: site as a random effect, federated by sufficient statistics)::

    y_r = α_{s,r} + β_{age,r}·a + β_{sex,r}·s + ε,     ε ~ N(0, σ²_r),  α_{s,r} ~ N(μ_r, τ²_r)

* ``y_r`` is the scan's **regional log profile**: ``log`` of the mean uptake in composite
  region ``r`` (:func:`fedmi.shared.regional.region_index`) minus the mean ``log`` over the
  :data:`REFERENCE_COMPOSITES` (cerebellum, vermis, sensorimotor cortex, thalamus, putamen:
  regions that AD, bvFTD, DLB and normal aging largely spare), so a global level drops out
  and a regional loss of 10 % reads as about −0.105. A reference inside the brain's
  preserved regions rather than the global mean keeps a widespread loss from lowering the
  reference itself (Yakushev et al. 2008, Psychiatry Res Neuroimaging 164:143; Dukart et
  al. 2010, NeuroImage 49:1490 [recalled]); on the default preset it raised the anomaly
  score's holdout AUC for AD from 0.90 to 0.94 and for DLB from 0.90 to 0.96 (seed 0,
  benchmarks/bench_normative.py);
* ``a = clip((age − 70) / 20, ±1.25)`` (45–95 years) and ``s = +½`` female, ``−½`` male
  (``0`` unknown), :func:`design_row`;
* ``α_{s,r}`` is site ``s``'s intercept (its scanner, reconstruction and population).

**Federated fit.** Each training site sends, over its normal scans, the count and the sums
``XᵀX``, ``XᵀY`` and ``Σ y²`` of its design ``X = [1, a, s]`` and its *clipped* profiles
``Y`` (:func:`site_statistics`: each profile, minus the coordinator's public ``centre``, is
clipped to L2 norm ``clip``, which bounds one scan's effect on every sum). The coordinator
solves the normal equations of the model with one intercept per site and shared slopes
(:func:`fit`): exactly the least-squares fit of the pooled normals (:func:`fit_pooled`,
the test's 1e-6), then the residual variance per region and the between-site variance of
the intercepts (method of moments). With DP on, the site adds Gaussian noise to each sum
(its ledger is charged; :mod:`fedmi.client.normative`) and the fit regularises what the
noise makes unstable: negative variances are floored and per-region variances are shrunk
towards their mean over regions by how much of their spread the noise explains.

**Use.** A site scores a scan against the population model (:meth:`NormativeModel.zscores`):
``z_r = (y_r − μ̂_r(a, s) − o_r) / √(σ²_r + τ²_post,r)``, with the site's own offset ``o``
estimated from its local normals when it has some (:meth:`NormativeModel.site_offset`, a
best linear unbiased predictor that never leaves the site; zero and the full ``τ²``
otherwise). The **anomaly score** is minus the mean of the :data:`ANOMALY_K` lowest
regional z (:func:`anomaly_score`); the regions below :data:`Z_THRESHOLD` are named.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from fedmi.shared.grid import Grid

#: The design's columns (:func:`design_row`).
DESIGN = ("intercept", "age", "sex")
#: Ages are centred here and scaled by :data:`AGE_SPAN` (years).
AGE_CENTRE = 70.0
AGE_SPAN = 20.0
#: ``|a|`` is clipped to this (45–95 years), which bounds a scan's design row.
AGE_CLIP = 1.25
#: The sex column's values.
SEX_CODE = {"F": 0.5, "M": -0.5}
#: Largest ``‖x‖²`` of a design row: ``1 + AGE_CLIP² + ¼``.
DESIGN_NORM2 = 1.0 + AGE_CLIP**2 + 0.25
#: L2 norm a normal's profile minus the centre is clipped to (log units; a normal's profile
#: around the federation's mean has norm ≈ 0.25 on the default preset's 53 regions).
DEFAULT_CLIP = 1.0
#: z below this is reported as abnormal (hypometabolism) and named.
Z_THRESHOLD = -2.0
#: The anomaly score averages this many lowest regional z (of ~52 regions: 5, 10 and 15
#: gave holdout AUCs 0.93/0.94/0.94 for AD and 1.00 for bvFTD on the default preset).
ANOMALY_K = 10
#: Composite-name prefixes of the reference regions of :func:`regional_profile`.
REFERENCE_COMPOSITES = ("cerebellum", "vermis", "sensorimotor", "thalamus", "putamen")
#: Variances are floored at this fraction of their mean over regions.
VARIANCE_FLOOR = 0.1
SCHEMA_VERSION = 1

#: Where each disorder's hypometabolism is expected (composite-name prefixes of
#: :func:`fedmi.shared.anatomy.parcellation`), for "do the named regions match the
#: pattern" (:func:`pattern_match`). AD: posterior cingulate/precuneus, parietal and
#: temporal association cortex; bvFTD: frontal, anterior cingulate, insula, anterior
#: temporal; DLB: occipital plus the AD-like parietal/temporal cortex.
DISORDER_REGIONS: dict[str, tuple[str, ...]] = {
    "AD": (
        "cingulate_posterior",
        "precuneus",
        "parietal_inferior",
        "parietal_superior",
        "angular",
        "supramarginal",
        "temporal_lateral",
        "medial_temporal",
    ),
    "FTD": (
        "frontal_lateral",
        "frontal_medial",
        "orbitofrontal",
        "cingulate_anterior",
        "cingulate_middle",
        "insula",
        "temporal_pole",
        "caudate",
    ),
    "DLB": (
        "occipital",
        "fusiform",
        "parietal_inferior",
        "parietal_superior",
        "angular",
        "supramarginal",
        "temporal_lateral",
    ),
}


def evaluation_groups(task: str) -> tuple[str, ...]:
    """The labels.csv groups the anomaly score is evaluated on: the task's normal class
    first, then its positive class, then the other disorders the task knows
    (:data:`DISORDER_REGIONS`; MCI is not one)."""
    from fedmi.shared.tasks import get_task

    spec = get_task(task)
    others = tuple(lab for lab in spec.other_labels if lab in DISORDER_REGIONS)
    return (spec.classes[0], spec.classes[1], *others)


class NormativeError(ValueError):
    """Statistics or a model that cannot be used; the message says which and why."""


def design_row(age_years: float | None, sex: str | None) -> np.ndarray:
    """``[1, a, s]`` of one scan (module docstring); an unknown age is ``AGE_CENTRE``.

    Parameters
    ----------
    age_years
        Age at the scan, from (0010,1010) *Patient's Age* (or the birth date).
    sex
        (0010,0040) *Patient's Sex*: ``F``, ``M``, anything else counts as unknown (0).
    """
    a = 0.0 if age_years is None else (float(age_years) - AGE_CENTRE) / AGE_SPAN
    if not math.isfinite(a):
        raise NormativeError(f"age {age_years!r} is not a finite number")
    a = float(np.clip(a, -AGE_CLIP, AGE_CLIP))
    return np.array([1.0, a, SEX_CODE.get(str(sex or "").upper(), 0.0)])


def regional_means(volume: np.ndarray, grid: Grid) -> tuple[np.ndarray, tuple[str, ...]]:
    """Mean of a template-grid volume in each composite region, and the region names.

    The regions of the regional model (:func:`fedmi.shared.regional.region_index`).
    """
    from fedmi.shared.regional import region_index  # torch only where used

    index, names = region_index(grid)
    flat = np.asarray(volume, dtype=np.float64).reshape(-1)
    if flat.size != index.size:
        raise NormativeError(f"volume of {flat.size} voxels is not on the grid {grid.shape}")
    inside = index >= 0
    sums = np.bincount(index[inside], weights=flat[inside], minlength=len(names))
    counts = np.bincount(index[inside], minlength=len(names))
    return sums / np.maximum(counts, 1), names


def profile_of(volume: np.ndarray, grid: Grid) -> tuple[np.ndarray, tuple[str, ...]]:
    """The regional log profile of one template-grid volume, and the region names."""
    means, names = regional_means(volume, grid)
    return regional_profile(means, names), names


def reference_index(region_names: Sequence[str]) -> np.ndarray:
    """Positions of the :data:`REFERENCE_COMPOSITES` among ``region_names``.

    Raises
    ------
    NormativeError
        None of them is among the regions.
    """
    idx = np.array([i for i, n in enumerate(region_names) if _base(n) in REFERENCE_COMPOSITES])
    if idx.size == 0:
        raise NormativeError(
            f"none of the reference regions {REFERENCE_COMPOSITES} is among the regions"
        )
    return idx


def regional_profile(regional_means: np.ndarray, region_names: Sequence[str]) -> np.ndarray:
    """Log profile(s) from regional mean uptake ``(..., R)``: ``log m − mean_ref log m``."""
    m = np.asarray(regional_means, dtype=np.float64)
    if m.ndim < 1 or m.shape[-1] < 2 or m.shape[-1] != len(region_names):
        raise NormativeError(
            f"need one regional mean per region ({len(region_names)}), got shape {m.shape}"
        )
    log_m = np.log(np.clip(m, 1e-6, None))
    return log_m - log_m[..., reference_index(region_names)].mean(axis=-1, keepdims=True)


def clip_rows(rows: np.ndarray, centre: np.ndarray, clip: float) -> np.ndarray:
    """``centre + (row − centre)·min(1, clip / ‖row − centre‖)`` for each row."""
    d = np.asarray(rows, dtype=np.float64) - centre
    norms = np.linalg.norm(d, axis=1, keepdims=True)
    scale = np.minimum(1.0, clip / np.maximum(norms, 1e-12))
    return centre + d * scale


@dataclass(frozen=True)
class NormativeStatistics:
    """One site's sufficient statistics of its normal scans.

    Attributes
    ----------
    count
        Normal scans (noisy under DP).
    xtx
        ``(3, 3)`` ``Σ x xᵀ`` of the design rows.
    xty
        ``(3, R)`` ``Σ x (y − centre)ᵀ`` of the clipped, centred profiles.
    yty
        ``(R,)`` ``Σ (y − centre)²`` per region.
    noise_sd
        The standard deviation of the noise the site added to each block (``count``,
        ``xtx``, ``xty``, ``yty``); all zero without DP.
    """

    count: float
    xtx: np.ndarray
    xty: np.ndarray
    yty: np.ndarray
    noise_sd: Mapping[str, float] = field(
        default_factory=lambda: {"count": 0.0, "xtx": 0.0, "xty": 0.0, "yty": 0.0}
    )

    def __post_init__(self) -> None:
        p = len(DESIGN)
        xtx, xty, yty = (np.asarray(v, dtype=np.float64) for v in (self.xtx, self.xty, self.yty))
        if xtx.shape != (p, p) or xty.ndim != 2 or xty.shape[0] != p or yty.shape != xty.shape[1:]:
            raise NormativeError(
                f"statistics have shapes xtx {xtx.shape}, xty {xty.shape}, yty {yty.shape}; "
                f"expected ({p}, {p}), ({p}, R) and (R,)"
            )
        finite = all(np.all(np.isfinite(v)) for v in (xtx, xty, yty))
        if not finite or not math.isfinite(float(self.count)):
            raise NormativeError("statistics contain NaN or infinity")
        object.__setattr__(self, "xtx", xtx)
        object.__setattr__(self, "xty", xty)
        object.__setattr__(self, "yty", yty)

    @property
    def n_regions(self) -> int:
        return int(self.xty.shape[1])


def site_statistics(
    profiles: np.ndarray,
    ages: Sequence[float | None],
    sexes: Sequence[str | None],
    centre: np.ndarray,
    clip: float = DEFAULT_CLIP,
) -> NormativeStatistics:
    """Exact sufficient statistics of one site's normal scans (before any DP noise).

    Parameters
    ----------
    profiles
        ``(n, R)`` regional log profiles (:func:`regional_profile`).
    ages, sexes
        Per scan, from the header ((0010,1010), (0010,0040)).
    centre
        ``(R,)`` public centre the profiles are clipped around (sent by the coordinator).
    clip
        L2 bound of ``profile − centre`` (:func:`clip_rows`).
    """
    y = np.asarray(profiles, dtype=np.float64)
    centre = np.asarray(centre, dtype=np.float64)
    if y.ndim != 2 or centre.shape != (y.shape[1],):
        raise NormativeError(f"profiles {y.shape} and centre {centre.shape} do not match")
    if len(ages) != len(y) or len(sexes) != len(y):
        raise NormativeError("one age and one sex per profile")
    if not clip > 0:
        raise NormativeError(f"clip must be > 0, not {clip!r}")
    x = np.array([design_row(a, s) for a, s in zip(ages, sexes, strict=True)]).reshape(-1, 3)
    d = clip_rows(y, centre, clip) - centre if len(y) else y
    return NormativeStatistics(
        count=float(len(y)), xtx=x.T @ x, xty=x.T @ d, yty=(d * d).sum(axis=0)
    )


def sensitivities(clip: float) -> dict[str, float]:
    """L2 sensitivity of each block when one scan is added or removed."""
    return {
        "count": 1.0,
        "xtx": DESIGN_NORM2,
        "xty": math.sqrt(DESIGN_NORM2) * clip,
        "yty": clip * clip,
    }


@dataclass(frozen=True)
class NormativeModel:
    """The population normative model (module docstring); a JSON-able value.

    Attributes
    ----------
    region_names
        The composite region of each column.
    centre, intercept
        ``(R,)``: the public centre and the population intercept ``μ`` (relative to it).
    slopes
        ``(2, R)``: age and sex coefficients (age row zero when ``adjust_age`` is off).
    sigma2, tau2
        ``(R,)``: within-site residual variance, between-site variance of intercepts.
    n_sites, n_scans
        What the fit used (``n_scans`` the sum of the sites' released counts).
    adjust_age
        Whether age is in the model (the unadjusted reference has it off).
    dp
        Whether the statistics carried DP noise.
    """

    region_names: tuple[str, ...]
    centre: np.ndarray
    intercept: np.ndarray
    slopes: np.ndarray
    sigma2: np.ndarray
    tau2: np.ndarray
    n_sites: int
    n_scans: float
    adjust_age: bool = True
    dp: bool = False

    def expected(self, age_years: float | None, sex: str | None) -> np.ndarray:
        """Expected profile ``(R,)`` of a normal of this age and sex at an average site."""
        x = design_row(age_years, sex)
        return self.centre + self.intercept + x[1:] @ self.slopes

    def site_offset(
        self, profiles: np.ndarray, ages: Sequence[float | None], sexes: Sequence[str | None]
    ) -> tuple[np.ndarray, np.ndarray]:
        """A site's own offset from its local normals and the offset's posterior variance.

        The best linear unbiased predictor of the site's random intercept:
        ``o = n τ² / (n τ² + σ²) · mean residual``, variance ``τ² σ² / (n τ² + σ²)``.
        Computed and kept at the site; with no normals: ``(0, τ²)``.
        """
        y = np.asarray(profiles, dtype=np.float64).reshape(-1, len(self.region_names))
        n = len(y)
        if n == 0:
            return np.zeros_like(self.tau2), self.tau2.copy()
        resid = y - np.array([self.expected(a, s) for a, s in zip(ages, sexes, strict=True)])
        shrink = n * self.tau2 / (n * self.tau2 + self.sigma2)
        return shrink * resid.mean(axis=0), self.tau2 * self.sigma2 / (n * self.tau2 + self.sigma2)

    def own_offsets(
        self,
        profiles: np.ndarray,
        ages: Sequence[float | None],
        sexes: Sequence[str | None],
        normal: Sequence[bool],
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """Each scan's site offset from the site's normals, never from the scan itself.

        The offset of :meth:`site_offset` from the scans where ``normal`` is true; a normal
        scan's own offset leaves that scan out (leave-one-out), so no normal is compared
        with a reference it helped to make and the normals' false-positive rate is not
        flattered. One ``(offset, posterior variance)`` per scan, for :meth:`zscores`.
        """
        y = np.asarray(profiles, dtype=np.float64).reshape(-1, len(self.region_names))
        flags = [bool(v) for v in normal]
        if not len(flags) == len(y) == len(ages) == len(sexes):
            raise NormativeError(
                f"{len(y)} profiles, {len(ages)} ages, {len(sexes)} sexes and {len(flags)} "
                "normal flags: one of each per scan"
            )
        idx = [i for i, f in enumerate(flags) if f]
        everyone = self.site_offset(y[idx], [ages[i] for i in idx], [sexes[i] for i in idx])
        out = []
        for i, f in enumerate(flags):
            if not f:
                out.append(everyone)
                continue
            rest = [j for j in idx if j != i]
            out.append(self.site_offset(y[rest], [ages[j] for j in rest], [sexes[j] for j in rest]))
        return out

    def zscores(
        self,
        profile: np.ndarray,
        age_years: float | None,
        sex: str | None,
        offset: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> np.ndarray:
        """Regional z ``(R,)`` of one profile; ``offset`` from :meth:`site_offset` or none."""
        o, v = (np.zeros_like(self.tau2), self.tau2) if offset is None else offset
        resid = np.asarray(profile, dtype=np.float64) - self.expected(age_years, sex) - o
        return resid / np.sqrt(self.sigma2 + v)

    def to_dict(self) -> dict[str, object]:
        """The JSON form (``normative_model.json`` in a model package)."""
        return {
            "schema_version": SCHEMA_VERSION,
            "model": "linear mixed model per region: site random intercept, age and sex",
            "design": list(DESIGN),
            "age_centre": AGE_CENTRE,
            "age_span": AGE_SPAN,
            "age_clip": AGE_CLIP,
            "sex_code": SEX_CODE,
            "region_names": list(self.region_names),
            "centre": _floats(self.centre),
            "intercept": _floats(self.intercept),
            "slopes": {"age": _floats(self.slopes[0]), "sex": _floats(self.slopes[1])},
            "sigma2": _floats(self.sigma2),
            "tau2": _floats(self.tau2),
            "n_sites": self.n_sites,
            "n_scans": round(float(self.n_scans), 3),
            "adjust_age": self.adjust_age,
            "dp": self.dp,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> NormativeModel:
        """Read :meth:`to_dict`'s form back, checking every field.

        Raises
        ------
        NormativeError
            A missing or unknown key, a wrong length, a non-finite value or a negative
            variance (the message names it).
        """
        expected = set(cls.template_keys())
        keys = set(data)
        if keys != expected:
            raise NormativeError(
                f"normative model keys: missing {sorted(expected - keys)}, "
                f"unknown {sorted(keys - expected)}"
            )
        if data["schema_version"] != SCHEMA_VERSION:
            raise NormativeError(
                f"normative model schema_version {data['schema_version']!r}; "
                f"this fedmi reads {SCHEMA_VERSION}"
            )
        names = tuple(str(n) for n in data["region_names"])  # type: ignore[union-attr]
        r = len(names)

        def vec(key: str, value: object) -> np.ndarray:
            arr = np.asarray(value, dtype=np.float64)
            if arr.shape != (r,) or not np.all(np.isfinite(arr)):
                raise NormativeError(f"normative model {key}: expected {r} finite numbers")
            return arr

        slopes = data["slopes"]
        if not isinstance(slopes, Mapping) or set(slopes) != {"age", "sex"}:
            raise NormativeError("normative model slopes: expected {'age': [...], 'sex': [...]}")
        sigma2, tau2 = vec("sigma2", data["sigma2"]), vec("tau2", data["tau2"])
        if np.any(sigma2 <= 0) or np.any(tau2 < 0):
            raise NormativeError("normative model variances must be sigma2 > 0 and tau2 >= 0")
        return cls(
            region_names=names,
            centre=vec("centre", data["centre"]),
            intercept=vec("intercept", data["intercept"]),
            slopes=np.stack([vec("slopes.age", slopes["age"]), vec("slopes.sex", slopes["sex"])]),
            sigma2=sigma2,
            tau2=tau2,
            n_sites=int(data["n_sites"]),  # type: ignore[call-overload]
            n_scans=float(data["n_scans"]),  # type: ignore[arg-type]
            adjust_age=bool(data["adjust_age"]),
            dp=bool(data["dp"]),
        )

    @staticmethod
    def template_keys() -> tuple[str, ...]:
        return (
            "schema_version",
            "model",
            "design",
            "age_centre",
            "age_span",
            "age_clip",
            "sex_code",
            "region_names",
            "centre",
            "intercept",
            "slopes",
            "sigma2",
            "tau2",
            "n_sites",
            "n_scans",
            "adjust_age",
            "dp",
        )

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1) + "\n"

    @classmethod
    def from_json(cls, text: str) -> NormativeModel:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise NormativeError(f"normative model is not JSON: {exc}") from None
        if not isinstance(data, Mapping):
            raise NormativeError("normative model must be a JSON object")
        return cls.from_dict(data)


def _floats(arr: np.ndarray) -> list[float]:
    return [float(f"{v:.8g}") for v in np.asarray(arr, dtype=np.float64)]


def fit(
    stats: Sequence[NormativeStatistics],
    region_names: Sequence[str],
    centre: np.ndarray,
    *,
    adjust_age: bool = True,
    ridge: float | None = None,
) -> NormativeModel:
    """Fit the mixed model from the sites' statistics (module docstring).

    Parameters
    ----------
    stats
        One per training site (at least 2 sites, or 1 with ``tau2`` 0).
    region_names, centre
        The regions and the centre the sites used.
    adjust_age
        ``False`` fits the unadjusted reference (no age column; same statistics).
    ridge
        Added to the diagonal of the normal equations (relative to their scale), so noisy
        DP statistics still solve; default 1e-6 with DP noise, 0 without.

    Raises
    ------
    NormativeError
        No site, mismatched regions, or too few scans for the parameters.
    """
    if not stats:
        raise NormativeError("no site sent normative statistics")
    r = len(region_names)
    if any(s.n_regions != r for s in stats):
        raise NormativeError(f"every site must send {r} regions")
    cols = [0, 1, 2] if adjust_age else [0, 2]
    k = len(cols) - 1  # shared slopes
    n_sites = len(stats)
    size = n_sites + k
    lhs = np.zeros((size, size))
    rhs = np.zeros((size, r))
    for i, s in enumerate(stats):
        xtx = s.xtx[np.ix_(cols, cols)]
        xty = s.xty[cols]
        lhs[i, i] = xtx[0, 0]
        lhs[i, n_sites:] = xtx[0, 1:]
        lhs[n_sites:, i] = xtx[1:, 0]
        lhs[n_sites:, n_sites:] += xtx[1:, 1:]
        rhs[i] = xty[0]
        rhs[n_sites:] += xty[1:]
    counts = np.array([max(float(s.count), 0.0) for s in stats])
    n_total = float(counts.sum())
    dof = n_total - size
    if dof < 1:
        raise NormativeError(
            f"{n_total:.0f} normal scans for {size} parameters per region: too few to fit"
        )
    dp = any(any(v > 0 for v in s.noise_sd.values()) for s in stats)
    if ridge is None:
        ridge = 1e-6 if dp else 0.0
    scale = float(np.mean(np.abs(np.diag(lhs)))) or 1.0
    try:
        if ridge > 0:
            theta = np.linalg.solve(lhs + ridge * scale * np.eye(size), rhs)
        else:  # exact statistics: the minimum-norm solution (normals of one sex, unknown ages)
            theta = np.linalg.lstsq(lhs, rhs, rcond=None)[0]
    except np.linalg.LinAlgError as exc:
        raise NormativeError(f"the normal equations cannot be solved: {exc}") from None
    alphas, beta = theta[:n_sites], theta[n_sites:]
    rss = np.zeros(r)
    for i, s in enumerate(stats):
        th = np.vstack([alphas[i : i + 1], beta])  # (k + 1, R)
        xtx = s.xtx[np.ix_(cols, cols)]
        xty = s.xty[cols]
        rss += s.yty - 2.0 * np.sum(th * xty, axis=0) + np.einsum("pr,pq,qr->r", th, xtx, th)
    sigma2 = _regularised(rss / dof, _noise_var_sigma2(stats, dof))
    return _model(alphas, beta, counts, sigma2, region_names, centre, adjust_age=adjust_age, dp=dp)


def _model(
    alphas: np.ndarray,
    beta: np.ndarray,
    counts: np.ndarray,
    sigma2: np.ndarray,
    region_names: Sequence[str],
    centre: np.ndarray,
    *,
    adjust_age: bool,
    dp: bool = False,
) -> NormativeModel:
    """The population model from the per-site intercepts ``alphas`` ``(S, R)`` and the
    shared slopes ``beta`` (age and sex, or sex alone without age): the count-weighted
    intercept, and the between-site variance by the method of moments (the spread of the
    intercepts less their sampling variance), half-pooled over regions."""
    n_sites, r = alphas.shape
    total = float(counts.sum())
    weights = counts / total if total > 0 else np.full(n_sites, 1.0 / n_sites)
    intercept = weights @ alphas
    tau2 = np.zeros(r)
    if n_sites > 1:
        spread = ((alphas - intercept) ** 2 * weights[:, None]).sum(axis=0)
        spread *= n_sites / (n_sites - 1)
        sampling = np.mean([1.0 / max(c, 1.0) for c in counts]) * sigma2
        tau2 = np.maximum(spread - sampling, 0.0)
        tau2 = 0.5 * tau2 + 0.5 * tau2.mean()  # four sites say little per region
    slopes = np.zeros((2, r))
    if adjust_age:
        slopes[:] = beta
    else:
        slopes[1] = beta[0]
    return NormativeModel(
        region_names=tuple(region_names),
        centre=np.asarray(centre, dtype=np.float64).copy(),
        intercept=intercept,
        slopes=slopes,
        sigma2=sigma2,
        tau2=tau2,
        n_sites=n_sites,
        n_scans=total,
        adjust_age=adjust_age,
        dp=dp,
    )


def _noise_var_sigma2(stats: Sequence[NormativeStatistics], dof: float) -> float:
    """Variance the sites' ``yty`` noise adds to each region's ``σ²`` estimate."""
    return float(sum(s.noise_sd.get("yty", 0.0) ** 2 for s in stats)) / dof**2


def _regularised(var: np.ndarray, noise_var: float) -> np.ndarray:
    """Per-region variances shrunk towards their mean by the noise's share, then floored.

    The floor is :data:`VARIANCE_FLOOR` of the mean, and under DP noise at least the noise's
    own standard deviation in the estimate (a noisy fit errs towards wide normal ranges,
    i.e. towards fewer false alarms, rather than towards a near-zero σ).
    """
    mean = float(np.mean(var))
    spread = float(np.var(var))
    floor = VARIANCE_FLOOR * max(mean, 1e-8)
    if noise_var > 0:
        w = max(spread - noise_var, 0.0) / max(spread, 1e-30)
        var = mean + w * (var - mean)
        floor = max(floor, float(np.sqrt(noise_var)))
    return np.maximum(var, floor)


def fit_pooled(
    profiles: np.ndarray,
    ages: Sequence[float | None],
    sexes: Sequence[str | None],
    site_ids: Sequence[str],
    region_names: Sequence[str],
    centre: np.ndarray,
    *,
    clip: float = DEFAULT_CLIP,
    adjust_age: bool = True,
) -> NormativeModel:
    """The same model fitted directly on pooled normals (least squares with site dummies).

    The baseline the federated fit must reproduce: no statistics, one ``lstsq`` on the
    stacked design ``[one-hot site, a, s]`` of the clipped profiles.
    """
    y = clip_rows(np.asarray(profiles, dtype=np.float64), np.asarray(centre), clip) - centre
    sites = sorted(set(site_ids), key=list(site_ids).index)
    x = np.array([design_row(a, s) for a, s in zip(ages, sexes, strict=True)])
    dummies = np.array([[1.0 if sid == s else 0.0 for s in sites] for sid in site_ids])
    cols = [1, 2] if adjust_age else [2]
    design = np.hstack([dummies, x[:, cols]])
    theta, *_ = np.linalg.lstsq(design, y, rcond=None)
    resid = y - design @ theta
    dof = len(y) - design.shape[1]
    sigma2 = np.maximum((resid**2).sum(axis=0) / dof, 0.0)
    sigma2 = np.maximum(sigma2, VARIANCE_FLOOR * max(float(sigma2.mean()), 1e-8))
    counts = np.array([sum(1 for s in site_ids if s == site) for site in sites], dtype=float)
    n = len(sites)
    return _model(theta[:n], theta[n:], counts, sigma2, region_names, centre, adjust_age=adjust_age)


def anomaly_score(z: np.ndarray, k: int = ANOMALY_K) -> float:
    """Minus the mean of the ``k`` lowest regional z (higher = further below normal)."""
    z = np.asarray(z, dtype=np.float64)
    k = max(1, min(int(k), z.size))
    return float(-np.mean(np.partition(z, k - 1)[:k]))


#: A scan is flagged when its anomaly score exceeds this quantile of the score of normals.
FLAG_QUANTILE = 0.95


@functools.lru_cache(maxsize=16)
def flag_threshold(n_regions: int, k: int = ANOMALY_K, quantile: float = FLAG_QUANTILE) -> float:
    """The anomaly score that ``quantile`` of normals stay below, were their regional z
    independent standard normals (Monte Carlo, 200 000 draws from a fixed seed; 1.75 for
    52 regions and k = 10). Real normals' regions are correlated and the model's σ is an
    estimate, so the federation's own false-positive rate is measured at the holdouts
    (benchmarks/bench_normative.py)."""
    if n_regions < 1 or not 0 < quantile < 1:
        raise NormativeError(
            f"need n_regions ≥ 1 and 0 < quantile < 1, not {n_regions}, {quantile}"
        )
    rng = np.random.default_rng(20261206)
    k = max(1, min(int(k), n_regions))
    scores = np.empty(200_000)
    for start in range(0, scores.size, 20_000):
        z = rng.standard_normal((20_000, n_regions))
        scores[start : start + 20_000] = -np.partition(z, k - 1, axis=1)[:, :k].mean(axis=1)
    return float(np.quantile(scores, quantile))


def regions_below(
    z: np.ndarray, region_names: Sequence[str], threshold: float = Z_THRESHOLD
) -> list[tuple[str, float]]:
    """``(region, z)`` of every region below ``threshold``, lowest first."""
    order = np.argsort(z)
    return [(region_names[i], float(z[i])) for i in order if z[i] < threshold]


def pattern_match(z: np.ndarray, region_names: Sequence[str], disorder: str, top: int = 3) -> bool:
    """Whether most of the ``top`` lowest regions lie in ``disorder``'s expected pattern."""
    if disorder not in DISORDER_REGIONS:
        raise NormativeError(f"unknown disorder {disorder!r}; known: {sorted(DISORDER_REGIONS)}")
    prefixes = DISORDER_REGIONS[disorder]
    lowest = [region_names[i] for i in np.argsort(z)[:top]]
    hits = sum(1 for name in lowest if _base(name) in prefixes)
    return hits * 2 > top


def _base(name: str) -> str:
    """A composite name without its hemisphere suffix."""
    return name[:-2] if name.endswith(("_L", "_R")) else name
