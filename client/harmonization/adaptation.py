"""Feature statistics and label-free adaptation of local harmonization layers.

Training sites of a ``fedmi`` run share only *aggregates* of the final model's embedding:
per-feature mean and variance over at least ``min-cell-count`` of their scans (the
``query.features`` reply, declared in :mod:`fedmi.shared.contract`); the server pools them and
passes the pooled moments to every site with the final model (``feat-count``,
``feat-mean``, ``feat-var`` in the ``evaluate.external`` config), and the same moments per
class (``-neg``/``-pos``) when every answering site had at least ``min-cell-count`` scans
of each class.

A site without trained local layers (a holdout, or a new site) then fits, per harmonization
group, its input adapter — intensity affine and sharpening, 3 numbers per group — and, for
the regional model, its per-region feature affine on its own *unlabelled* scans so that
its embedding moments match the federation's (:func:`adapt_to_reference`); labels are
never read. With per-class moments the regional model's feature affine is matched to the
federation's classes mixed at the site's own prevalence, which the site estimates without
labels from the adapted model's probabilities (Saerens et al.'s EM for prior shift, iterated
with the matching to a fixed point), so a site with more or fewer positives than the
federation does not lose disease signal to the matching. When no pooled moments arrive, or
fitting does not reduce the distance, the site evaluates with identity layers, i.e.
exactly the federated model. Which of ``trained``/``adapted``/``identity`` was used is
sent as the declared ``harmonization`` site field.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch

from fedmi.client.data import SiteData
from fedmi.client.harmonization.state import SiteHarmonization, load_site_harmonization
from fedmi.client.site.settings import SiteSettings
from fedmi.client.training.loop import predict
from fedmi.shared.harmonization import (
    ClassMoments,
    FeatureMoments,
    HarmonizedNet,
    LocalAffine,
    moment_distance,
)
from fedmi.shared.instructions import Instruction
from fedmi.shared.methods import HARMONIZED_METHODS, get_method
from fedmi.shared.model import ModelSpec, build_model, load_federated_state

log = logging.getLogger(__name__)


@torch.no_grad()
def evaluated_features(model: torch.nn.Module, x: torch.Tensor, batch: int = 32) -> torch.Tensor:
    """``model.features`` of every scan of ``x`` in eval mode (no dropout), float64."""
    model.eval()
    feats = [model.features(x[i : i + batch]).double() for i in range(0, len(x), batch)]
    return torch.cat(feats) if feats else torch.zeros(0, 1, dtype=torch.float64)


def feature_moments(model: torch.nn.Module, x: torch.Tensor) -> FeatureMoments:
    """Per-feature mean and population variance of ``model.features`` over ``x``."""
    f = evaluated_features(model, x)
    if len(f) == 0:
        return FeatureMoments(0, np.zeros(f.shape[1]), np.zeros(f.shape[1]))
    return FeatureMoments(len(f), f.mean(0).numpy(), f.var(0, unbiased=False).numpy())


@dataclass(frozen=True)
class AdaptResult:
    """Moment distance to the reference before and after fitting, and whether it was kept."""

    before: float
    after: float
    adapted: bool
    steps: int


def scan_groups(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The harmonization group of each scan of ``x`` (channel 1 of a harmonized input)."""
    spec = getattr(model, "spec", None)
    if spec is not None and x.shape[1] > spec.in_shape[0]:
        return x[:, -1].flatten(1)[:, 0].round().long()
    return torch.zeros(x.shape[0], dtype=torch.long)


def grouped_distance(
    features: torch.Tensor, groups: torch.Tensor, ref: FeatureMoments
) -> torch.Tensor:
    """Scan-weighted mean over groups of each group's moment distance to ``ref``.

    Every harmonization group of a site (one tracer, scanner and reconstruction) is
    matched to the federation on its own: matching only the mixture of two groups could
    leave them apart. Groups with fewer than two scans in ``features`` are skipped (a
    variance needs two); with none left the distance of all scans together is used.
    """
    total = features.new_zeros(())
    counted = 0
    for g in torch.unique(groups):
        f = features[groups == g]
        if len(f) < 2:
            continue
        total = total + len(f) * moment_distance(f.mean(0), f.var(0, unbiased=False), ref)
        counted += len(f)
    if counted == 0:
        return moment_distance(features.mean(0), features.var(0, unbiased=False), ref)
    return total / counted


def _distance(model: torch.nn.Module, x: torch.Tensor, ref: FeatureMoments) -> float:
    return float(grouped_distance(evaluated_features(model, x), scan_groups(model, x), ref))


#: A group needs this many scans before its feature-level affine is fitted to the
#: federation's moments (fewer give unstable variances; the group keeps identity).
MIN_GROUP_SCANS = 10


def adapt_to_reference(
    model: HarmonizedNet,
    x: torch.Tensor,
    ref: FeatureMoments,
    *,
    classes: ClassMoments | None = None,
    steps: int = 40,
    lr: float = 0.05,
    batch_size: int = 64,
    seed: int = 0,
    l2: float = 1e-2,
) -> AdaptResult:
    """Fit the site's local layers so the embedding moments of ``x`` match ``ref`` (no labels).

    Two parts, both per harmonization group and both label-free:

    1. the input adapter (intensity affine and sharpening, 3 numbers per group): Adam on
       each group's moment distance to ``ref`` (:func:`grouped_distance`) plus a small pull towards
       identity, the federated backbone and the norm corrections fixed;
    2. the feature-level local affines (the regional model's per-region scale and shift
       after its per-scan standardisation): in closed form, so each group with at least
       :data:`MIN_GROUP_SCANS` scans gets the federation's per-feature mean and variance —
       a location/scale harmonization in the spirit of ComBat, against moments the
       training sites shared only as aggregates. With ``classes`` the target is the
       federation's classes mixed at the site's own prevalence
       (:func:`_match_at_own_prevalence`).

    The fitted values are kept only if the distance over all of ``x`` to the final target
    went down; otherwise every fitted layer is reset.
    """
    params = model.adapter_parameters()
    affines = [a for a in model.feature_affines() if a.dweight.weight.shape[1] == len(ref.mean)]
    groups = scan_groups(model, x)
    unadapted = evaluated_features(model, x)
    if (not params and not affines) or len(x) < 2:
        before = float(grouped_distance(unadapted, groups, ref))
        return AdaptResult(before, before, False, 0)
    fitted = params + [p for a in affines for p in a.parameters()]
    saved = [p.detach().clone() for p in fitted]
    taken = 0
    if params:
        _fit_adapter(model, params, x, ref, steps=steps, lr=lr, batch=batch_size, seed=seed, l2=l2)
        taken = steps
    target = ref
    if affines and classes is not None:
        target = _match_at_own_prevalence(model, affines, x, classes)
    else:
        for affine in affines:
            _match_affine(model, affine, x, ref)
    before = float(grouped_distance(unadapted, groups, target))
    after = _distance(model, x, target)
    if not after < before:
        with torch.no_grad():
            for p, v in zip(fitted, saved, strict=True):
                p.copy_(v)
        return AdaptResult(before, before, False, taken)
    log.info("label-free adaptation: moment distance %.4f -> %.4f", before, after)
    return AdaptResult(before, after, True, taken)


def prior_shift_prevalence(
    p: np.ndarray, train_prevalence: float, *, iterations: int = 200, tol: float = 1e-7
) -> float:
    """A site's prevalence from probabilities calibrated at ``train_prevalence`` (no labels).

    The EM of Saerens, Latinne and Decaestecker (Neural Computation 2002): re-weight each
    posterior by the ratio of the new to the training prior, average, repeat. The plain
    mean of the probabilities is biased towards ``train_prevalence``. (Ten lines here
    rather than a quantification library as a dependency.)
    """
    pi0 = float(np.clip(train_prevalence, 1e-6, 1 - 1e-6))
    q = np.clip(np.asarray(p, dtype=np.float64), 1e-9, 1 - 1e-9)
    pi = pi0
    for _ in range(iterations):
        a = (pi / pi0) * q
        new = float(np.mean(a / (a + ((1 - pi) / (1 - pi0)) * (1 - q))))
        if abs(new - pi) < tol:
            return new
        pi = new
    return pi


def _match_at_own_prevalence(
    model: HarmonizedNet,
    affines: list[LocalAffine],
    x: torch.Tensor,
    classes: ClassMoments,
    *,
    iterations: int = 50,
    tol: float = 1e-4,
) -> FeatureMoments:
    """Match ``affines`` to the classes mixed at the prevalence the adapted model implies.

    Starting from the federation's prevalence, the affines are matched to
    :meth:`ClassMoments.mixture` at the current estimate, and the estimate becomes
    :func:`prior_shift_prevalence` of the adapted model's probabilities on ``x``, until it
    moves by less than ``tol``. Returns the final target moments.
    """
    prevalence = classes.prevalence
    target = classes.mixture(prevalence)
    for _ in range(iterations):
        for affine in affines:
            _match_affine(model, affine, x, target)
        # on the model's own device: the matching that follows runs there too
        p = predict(model, x, device=next(model.parameters()).device)
        estimate = prior_shift_prevalence(p, classes.prevalence)
        if abs(estimate - prevalence) < tol:
            break
        prevalence = estimate
        target = classes.mixture(prevalence)
    else:  # not settled: the layers still match the last target
        for affine in affines:
            _match_affine(model, affine, x, target)
    log.info("label-free adaptation at an estimated prevalence of %.2f", prevalence)
    return target


def _fit_adapter(
    model: HarmonizedNet,
    params: list[torch.nn.Parameter],
    x: torch.Tensor,
    ref: FeatureMoments,
    *,
    steps: int,
    lr: float,
    batch: int,
    seed: int,
    l2: float,
) -> None:
    trainable = {id(p) for p in params}
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    for p in model.parameters():
        p.requires_grad_(id(p) in trainable)
    identity = [
        torch.ones_like(params[0]),
        torch.zeros_like(params[1]),
        torch.zeros_like(params[2]),
    ]
    opt = torch.optim.Adam(params, lr=lr)
    gen = torch.Generator().manual_seed(seed)
    groups = scan_groups(model, x)
    model.eval()  # no dropout: the statistics must be those the model evaluates with
    try:
        for _ in range(steps):
            idx = torch.randperm(len(x), generator=gen)[:batch]
            f = model.features(x[idx]).double()
            loss = grouped_distance(f, groups[idx], ref)
            loss = loss + l2 * sum(
                ((p - i) ** 2).sum() for p, i in zip(params, identity, strict=True)
            )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    finally:
        for n, p in model.named_parameters():
            p.requires_grad_(flags[n])


@torch.no_grad()
def _match_affine(
    model: HarmonizedNet,
    affine: LocalAffine,
    x: torch.Tensor,
    ref: FeatureMoments,
    eps: float = 1e-4,
) -> None:
    """Set ``affine`` per group so the features of ``x`` get ``ref``'s mean and variance."""
    groups = scan_groups(model, x)
    affine.dweight.weight.zero_()
    affine.dbias.weight.zero_()
    f = evaluated_features(model, x)
    rm = torch.as_tensor(ref.mean, dtype=torch.float64)
    rv = torch.as_tensor(ref.var, dtype=torch.float64)
    for g in torch.unique(groups):
        z = f[groups == g]
        if len(z) < MIN_GROUP_SCANS:
            continue
        # exact for every feature that varies; bounded for one that (nearly) does not
        scale = torch.sqrt(rv / z.var(0, unbiased=False).clamp_min(eps)).clamp(0.1, 10.0)
        affine.dweight.weight[int(g)] = (scale - 1.0).to(affine.dweight.weight.dtype)
        affine.dbias.weight[int(g)] = (rm - scale * z.mean(0)).to(affine.dbias.weight.dtype)


def local_layers(site: SiteSettings, ins: Instruction, data: SiteData) -> SiteHarmonization | None:
    """The site's harmonized model for the run's method, or ``None`` for plain methods."""
    if ins.method not in HARMONIZED_METHODS:
        return None
    return load_site_harmonization(
        site, ins.task, ins.method, data, ModelSpec(arch=ins.model, task=ins.task)
    )


def evaluation_model(
    site: SiteSettings,
    ins: Instruction,
    arrays_state: Mapping[str, torch.Tensor],
    data: SiteData,
    which: str,
) -> tuple[HarmonizedNet, torch.Tensor, torch.Tensor, str] | None:
    """Model, inputs, labels and ``harmonization`` state to evaluate a harmonized method.

    A site whose layers were never trained fits them label-free on all its scans when the
    instruction carries the federation's pooled moments (``evaluate.external`` of a method
    that adapts: ``adapted``) and otherwise keeps identity layers.
    """
    hz = local_layers(site, ins, data)
    if hz is None:
        return None
    load_federated_state(hz.model, dict(arrays_state))
    x, y = hz.subset(data, which)
    status = hz.status
    if status != "trained":
        ref = getattr(ins, "reference", None)
        if ref is not None and get_method(hz.method).adapts:
            xa, _ = hz.subset(data, "all")  # unlabelled use only
            result = adapt_to_reference(hz.model, xa, ref, classes=getattr(ins, "classes", None))
            status = "adapted" if result.adapted else "identity"
            if result.adapted:
                hz.save("adapted")
        else:
            status = "identity"
    return hz.model, x, y, status


def site_model(
    site: SiteSettings,
    ins: Instruction,
    arrays_state: Mapping[str, torch.Tensor],
    data: SiteData,
    which: str,
) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor, str | None]:
    """The received model as this site evaluates it, with the scans of ``which``.

    Harmonized methods use :func:`evaluation_model` (the fourth value says which local
    layers: ``trained``, ``adapted`` or ``identity``); plain methods the federated model
    alone (``None``).
    """
    harmonized = evaluation_model(site, ins, arrays_state, data, which)
    if harmonized is not None:
        return harmonized
    model = build_model(ModelSpec(arch=ins.model, task=ins.task))
    load_federated_state(model, dict(arrays_state))
    x, y = data.subset(which)
    return model, x, y, None
