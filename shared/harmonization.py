"""Site-local harmonization layers: per-group input adapters and local normalisation affines.

Scans of one *harmonization group* share a tracer, a scanner and a reconstruction, i.e.
the DICOM facts (0054,0016) *Radiopharmaceutical Information Sequence* (tracer),
(0008,0070) *Manufacturer*, (0008,1090) *Manufacturer's Model Name* and (0054,1103)
*Reconstruction Method*. A site learns one set of local parameters per group and keeps
them: every module here subclasses :class:`fedmi.shared.model.SiteLocal`, so
:func:`fedmi.shared.model.federated_state_dict` never exports them.

Two model variants, chosen by the run config's ``method`` (:mod:`fedmi.shared.methods`):

``fedbn``
    FedBN/SiloBN-style: every GroupNorm of the backbone keeps its per-sample
    normalisation but its affine (γ, β) becomes site-local (:class:`LocalGroupNorm`);
    one set per site (the regional model has no GroupNorm: its ``fedbn`` is FedAvg).
``fedmi``
    An input adapter per group (:class:`InputAdapter`: intensity affine ``a·x + b`` plus a
    learnable amount ``c`` of unsharp masking, ``c·(x − G∗x)``, that sharpens for
    ``c > 0`` and smooths for ``c < 0``) and, after every federated GroupNorm, a site-local
    per-group residual affine (:class:`LocalAffine`, identity at zero); the regional
    model gets a per-region feature affine that only sites without trained layers fit,
    label-free. An unseen site starts from identity — i.e. exactly the federated model —
    and fits its adapter and feature affine label-free (``client.adaptation``).

Per-scan group indices travel with the input: a harmonized model takes ``(n, 2, x, y, z)``
where channel 1 is the scan's group index (constant over the volume); with one channel
every scan is group 0. All layers are Opacus-compatible (``nn.Embedding`` and
``nn.GroupNorm`` have per-sample gradient samplers; nothing is in-place; no BatchNorm).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fedmi.shared.contract import HARMONIZATION_STATES  # noqa: F401 - re-exported
from fedmi.shared.methods import HarmonizationSpec, get_method
from fedmi.shared.model import FedmiNet, IdentityHarmonizer, ModelSpec, SiteLocal, build_model

#: Ingest-row fields that define a harmonization group (see the module docstring).
GROUP_FIELDS = ("tracer", "manufacturer", "model", "reconstruction")


def group_key(row: Mapping[str, object]) -> str:
    """The harmonization group of one ingest row: ``tracer|manufacturer|model|reconstruction``.

    Missing values read ``unknown`` (e.g. an ingest cache written before (0054,1103)
    *Reconstruction Method* was recorded), so such scans still group by the rest.
    """
    parts = []
    for f in GROUP_FIELDS:
        value = " ".join(str(row.get(f) or "").split())
        parts.append(value if value else "unknown")
    return "|".join(parts)


class GroupContext:
    """The group index of each scan of the current batch, shared by a model's local layers."""

    def __init__(self) -> None:
        self.groups: torch.Tensor | None = None

    def get(self, batch: int, device: torch.device) -> torch.Tensor:
        g = self.groups
        if g is None or g.shape[0] != batch:
            return torch.zeros(batch, dtype=torch.long, device=device)
        return g.to(device)


def _embedding(n_groups: int, width: int, value: float) -> nn.Embedding:
    emb = nn.Embedding(n_groups, width)
    with torch.no_grad():
        emb.weight.fill_(value)
    return emb


def _gaussian_kernel(sigma_vox: float) -> torch.Tensor:
    radius = max(1, int(math.ceil(2.0 * sigma_vox)))
    t = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k1 = torch.exp(-0.5 * (t / sigma_vox) ** 2)
    k1 = k1 / k1.sum()
    k = k1[:, None, None] * k1[None, :, None] * k1[None, None, :]
    return k[None, None]


class InputAdapter(SiteLocal):
    """Per-group intensity and resolution adapter on the template-grid volume.

    ``y = a_g·x + b_g + c_g·(x − G_σ∗x)`` with ``G_σ`` a fixed Gaussian (σ = 1 voxel of the
    4 mm template, ≈ 9 mm FWHM). Initialised to identity (a = 1, b = c = 0).
    """

    def __init__(self, n_groups: int, context: GroupContext, sigma_vox: float = 1.0) -> None:
        super().__init__()
        self.context = context
        self.scale = _embedding(n_groups, 1, 1.0)
        self.shift = _embedding(n_groups, 1, 0.0)
        self.detail = _embedding(n_groups, 1, 0.0)
        self.register_buffer("kernel", _gaussian_kernel(sigma_vox), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = self.context.get(x.shape[0], x.device)
        view = (-1,) + (1,) * (x.dim() - 1)
        pad = self.kernel.shape[-1] // 2
        smooth = F.conv3d(F.pad(x, (pad,) * 6, mode="replicate"), self.kernel.to(x.dtype))
        return (
            self.scale(g[:, None]).view(view) * x
            + self.shift(g[:, None]).view(view)
            + self.detail(g[:, None]).view(view) * (x - smooth)
        )


class LocalGroupNorm(SiteLocal):
    """GroupNorm whose affine (γ, β) is site-local and per group (FedBN/SiloBN on GroupNorm)."""

    def __init__(
        self, num_groups: int, num_channels: int, eps: float, n_groups: int, context: GroupContext
    ) -> None:
        super().__init__()
        self.context = context
        self.norm = nn.GroupNorm(num_groups, num_channels, eps=eps, affine=False)
        self.weight = _embedding(n_groups, num_channels, 1.0)
        self.bias = _embedding(n_groups, num_channels, 0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = self.context.get(x.shape[0], x.device)
        view = (x.shape[0], x.shape[1]) + (1,) * (x.dim() - 2)
        return self.norm(x) * self.weight(g[:, None]).view(view) + self.bias(g[:, None]).view(view)


class LocalAffine(SiteLocal):
    """Site-local per-group correction after a federated norm: ``y·(1 + Δγ_g) + Δβ_g``.

    ``feature_level``: the affine acts on the model's features themselves (the regional
    model's per-scan standardised regional ratios), so a site without trained layers can
    fit it label-free, per group, to the federation's feature moments
    (:func:`fedmi.client.harmonization.adaptation.adapt_to_reference`).
    """

    def __init__(
        self, num_channels: int, n_groups: int, context: GroupContext, feature_level: bool = False
    ) -> None:
        super().__init__()
        self.context = context
        self.feature_level = feature_level
        self.dweight = _embedding(n_groups, num_channels, 0.0)
        self.dbias = _embedding(n_groups, num_channels, 0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = self.context.get(x.shape[0], x.device)
        view = (x.shape[0], x.shape[1]) + (1,) * (x.dim() - 2)
        return x * (1.0 + self.dweight(g[:, None]).view(view)) + self.dbias(g[:, None]).view(view)


class HarmonizedNet(FedmiNet):
    """:class:`FedmiNet` with per-group local layers; input channel 1 carries the group index."""

    def __init__(self, spec: ModelSpec, hspec: HarmonizationSpec, n_groups: int = 1) -> None:
        context = GroupContext()
        harmonizer = InputAdapter(n_groups, context) if hspec.adapter else IdentityHarmonizer()
        super().__init__(spec, harmonizer)
        self.context = context
        self.hspec = hspec
        self.n_groups = int(n_groups)
        _localise_norms(self.backbone, hspec.norm, n_groups, context)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] > self.spec.in_shape[0]:
            self.context.groups = x[:, -1].flatten(1)[:, 0].round().long()
            return x[:, : self.spec.in_shape[0]]
        self.context.groups = None
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(self.harmonizer(self._split(x)))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone.encoder(self.harmonizer(self._split(x)))

    def adapter_parameters(self) -> list[nn.Parameter]:
        """Parameters of the input adapter (empty when the variant has none)."""
        return list(self.harmonizer.parameters())

    def feature_affines(self) -> list[LocalAffine]:
        """The local affines that act on the features themselves (regional model)."""
        return [
            m for m in self.backbone.modules() if isinstance(m, LocalAffine) and m.feature_level
        ]


def _localise_norms(root: nn.Module, mode: str, n_groups: int, context: GroupContext) -> None:
    """Make every federated norm's affine site-local (``local``) or add a local correction.

    GroupNorms (the CNN) follow ``mode``. In ``residual`` mode (fedmi) a LayerNorm without
    an affine (the regional model's per-scan standardisation across regions) is followed by
    a per-group, per-region local affine that training never moves: it stays identity at
    the training sites, whose features define the federation's reference, and a site
    without trained layers fits it label-free to that reference (ComBat-like location and
    scale, :func:`fedmi.client.harmonization.adaptation.adapt_to_reference`). Trained with labels it would
    absorb the disease signal site by site (on the dat-pd preset it cost 0.02–0.08 AUC at
    the holdout).
    """
    for name, module in list(root.named_modules()):
        if isinstance(module, SiteLocal):
            continue
        parent_name, _, attr = name.rpartition(".")
        parent = root.get_submodule(parent_name) if parent_name else root
        if isinstance(module, nn.LayerNorm) and not module.elementwise_affine:
            if mode == "residual":
                width = int(module.normalized_shape[-1])
                affine = LocalAffine(width, n_groups, context, feature_level=True)
                affine.requires_grad_(False)  # fitted label-free, never by training
                setattr(parent, attr, nn.Sequential(module, affine))
            continue
        if not isinstance(module, nn.GroupNorm):
            continue
        if mode == "local":
            new: nn.Module = LocalGroupNorm(
                module.num_groups, module.num_channels, module.eps, n_groups, context
            )
        else:
            new = nn.Sequential(module, LocalAffine(module.num_channels, n_groups, context))
        setattr(parent, attr, new)


def build_method_model(method: str, spec: ModelSpec | None = None, n_groups: int = 1) -> FedmiNet:
    """The model of the method named ``method``: plain unless the method is harmonized.

    The federated part does not depend on ``n_groups`` (only the local layers do), so the
    server builds its initial weights with ``n_groups=1``.
    """
    spec = spec or ModelSpec()
    hspec = get_method(method).harmonization
    if hspec is None:
        return build_model(spec)
    return HarmonizedNet(spec, hspec, max(1, int(n_groups)))


def with_groups(x: torch.Tensor, groups: Sequence[int] | np.ndarray | torch.Tensor) -> torch.Tensor:
    """Append the group-index channel to ``x`` ``(n, c, …)`` → ``(n, c + 1, …)``."""
    g = torch.as_tensor(np.asarray(groups), dtype=x.dtype).view(-1, *([1] * (x.dim() - 1)))
    return torch.cat([x, g.expand(x.shape[0], 1, *x.shape[2:])], dim=1)


# --- aggregate feature statistics ---------------------------------------------------------


@dataclass(frozen=True)
class FeatureMoments:
    """Per-feature mean and (population) variance of embeddings over ``count`` scans."""

    count: int
    mean: np.ndarray
    var: np.ndarray


def pool_moments(parts: Sequence[FeatureMoments]) -> FeatureMoments | None:
    """Pool per-site moments exactly (count-weighted mean, within + between variance)."""
    parts = [p for p in parts if p.count > 0]
    if not parts:
        return None
    n = sum(p.count for p in parts)
    mean = sum(p.count * p.mean for p in parts) / n
    second = sum(p.count * (p.var + p.mean**2) for p in parts) / n
    return FeatureMoments(n, np.asarray(mean), np.maximum(np.asarray(second - mean**2), 0.0))


@dataclass(frozen=True)
class ClassMoments:
    """The training sites' feature moments per class (Aβ−/Aβ+, CN/AD, HC/PD).

    Matching an unseen site to the pooled moments treats a difference in disease
    prevalence as a scanner effect and removes part of the disease signal from the site's
    mean (the limit of ComBat-style location/scale matching under prevalence shift,
    PHANTOM_SPEC §3.4). :meth:`mixture` gives the moments the federation's scans would
    have at another prevalence, so a site can be matched at its own.
    """

    neg: FeatureMoments
    pos: FeatureMoments

    @property
    def prevalence(self) -> float:
        """The share of positives among the pooled scans."""
        return self.pos.count / (self.pos.count + self.neg.count)

    def mixture(self, prevalence: float) -> FeatureMoments:
        """Moments of the two classes mixed at ``prevalence`` (law of total variance)."""
        p = float(np.clip(prevalence, 0.0, 1.0))
        gap = self.pos.mean - self.neg.mean
        return FeatureMoments(
            self.pos.count + self.neg.count,
            p * self.pos.mean + (1.0 - p) * self.neg.mean,
            p * self.pos.var + (1.0 - p) * self.neg.var + p * (1.0 - p) * gap**2,
        )


def moment_distance(
    mean: torch.Tensor | np.ndarray,
    var: torch.Tensor | np.ndarray,
    ref: FeatureMoments,
    eps: float = 1e-4,
) -> torch.Tensor:
    """Mean over features of ``(μ − μ_ref)²/(σ²_ref + ε) + (log((σ² + ε)/(σ²_ref + ε)))²``."""
    mean, var = torch.as_tensor(mean), torch.as_tensor(var)
    rm = torch.as_tensor(ref.mean, dtype=mean.dtype)
    rv = torch.as_tensor(ref.var, dtype=mean.dtype)
    d_mean = (mean - rm) ** 2 / (rv + eps)
    d_var = torch.log((var + eps) / (rv + eps)) ** 2
    return (d_mean + d_var).mean()


#: Run-config keys of the pooled moments the server sends with the final model
#: (``evaluate.external``); the per-class moments use the same keys with ``-neg``/``-pos``.
REFERENCE_KEYS = ("feat-count", "feat-mean", "feat-var")


def _moments_config(m: FeatureMoments, suffix: str = "") -> dict[str, object]:
    return {
        f"feat-count{suffix}": int(m.count),
        f"feat-mean{suffix}": [float(v) for v in m.mean],
        f"feat-var{suffix}": [float(v) for v in m.var],
    }


def reference_config(ref: FeatureMoments, classes: ClassMoments | None = None) -> dict[str, object]:
    """Pooled (and per-class) moments as config-record values (see :func:`reference_from_config`)."""
    out = _moments_config(ref)
    if classes is not None:
        out |= _moments_config(classes.neg, "-neg") | _moments_config(classes.pos, "-pos")
    return out


def _moments_from(c: Mapping[str, object], suffix: str = "") -> FeatureMoments | None:
    keys = [f"{k}{suffix}" for k in REFERENCE_KEYS]
    if not all(k in c for k in keys):
        return None
    mean = np.asarray(c[keys[1]], dtype=np.float64)
    var = np.asarray(c[keys[2]], dtype=np.float64)
    if mean.shape != var.shape or mean.ndim != 1 or not np.isfinite(mean).all():
        return None
    return FeatureMoments(int(c[keys[0]]), mean, np.maximum(var, 0.0))  # type: ignore[call-overload]


def reference_from_config(
    config: Mapping[str, object] | None,
) -> tuple[FeatureMoments | None, ClassMoments | None]:
    """The pooled moments the server sent with the final model, and the per-class ones.

    Either is ``None`` when absent or malformed; the per-class moments also when a class
    is empty or their width differs from the pooled moments'.
    """
    c = dict(config or {})
    ref = _moments_from(c)
    neg, pos = _moments_from(c, "-neg"), _moments_from(c, "-pos")
    if ref is None or neg is None or pos is None:
        return ref, None
    if min(neg.count, pos.count) <= 0 or not neg.mean.shape == pos.mean.shape == ref.mean.shape:
        return ref, None
    return ref, ClassMoments(neg, pos)
