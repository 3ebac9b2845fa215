"""The training methods fedmi knows: one entry each, read by the server, the sites and the runner.

Adding a method is one :class:`Method` in :data:`METHODS`. What an entry says:

* ``aggregator``: how the coordinator combines the sites' updates — a key of
  :data:`fedmi.server.strategy.AGGREGATORS` (Flower's FedAvg, FedProx or FedAdam with
  fedmi's inbound checks);
* ``harmonization``: which site-local layers the model has (:class:`HarmonizationSpec`,
  built by :func:`fedmi.shared.harmonization.build_method_model`; ``None``: the plain
  model);
* ``adapts``: a site without trained local layers (a holdout) fits them label-free to the
  federation's embedding moments before it evaluates (``query.features``);
* ``federated``: ``False`` for the baselines every federated number stands beside, which the
  one-machine runner trains without Flower (``pooled``: one model on all training sites'
  train splits; ``local``: one model per training site).

The proximal term of FedProx (``mu/2·||w − w_global||²``) needs nothing here: Flower's FedProx
strategy sends ``proximal-mu`` with every train instruction and the site adds the term when
it is positive.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class HarmonizationSpec:
    """Which site-local layers a method's model has (:mod:`fedmi.shared.harmonization`).

    Attributes
    ----------
    adapter
        A per-group input adapter (intensity affine and sharpening) before the backbone.
    norm
        ``"local"``: every GroupNorm's affine (γ, β) becomes site-local; ``"residual"``: a
        site-local per-group correction after every federated norm.
    """

    adapter: bool
    norm: str


@dataclass(frozen=True)
class Method:
    """One training method (see the module docstring)."""

    name: str
    summary: str
    aggregator: str = "fedavg"
    harmonization: HarmonizationSpec | None = None
    adapts: bool = False
    federated: bool = True


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("fedavg", "FedAvg (McMahan et al. 2017): the example-weighted mean of updates"),
        Method("fedprox", "FedProx (Li et al. 2020): sites add mu/2·||w − w_global||²", "fedprox"),
        Method("fedadam", "FedAdam (Reddi et al. 2021): server-side Adam", "fedadam"),
        Method(
            "fedbn",
            "FedBN-style: every GroupNorm affine (γ, β) stays at the site",
            harmonization=HarmonizationSpec(adapter=False, norm="local"),
        ),
        Method(
            "fedmi",
            "per-group input adapters and norm corrections kept at the site, fitted "
            "label-free where never trained",
            harmonization=HarmonizationSpec(adapter=True, norm="residual"),
            adapts=True,
        ),
        Method("pooled", "baseline: one model on all training sites' data", federated=False),
        Method("local", "baseline: each training site alone", federated=False),
    )
}
#: Methods the coordinator runs through Flower (the run config's ``method``).
FEDERATED_METHODS: tuple[str, ...] = tuple(n for n, m in METHODS.items() if m.federated)
#: Methods the one-machine runner trains without Flower, for comparison.
BASELINES: tuple[str, ...] = tuple(n for n, m in METHODS.items() if not m.federated)
#: Methods whose model keeps site-local harmonization layers.
HARMONIZED_METHODS: tuple[str, ...] = tuple(
    n for n, m in METHODS.items() if m.harmonization is not None
)


def get_method(name: str) -> Method:
    """The registered method ``name``.

    Raises
    ------
    ValueError
        Naming the known methods when ``name`` is not one of them.
    """
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}: choose one of {', '.join(METHODS)}") from None
