"""The training methods fedmi knows: one entry each, read by the server, the sites and the runner.

Adding a method is one :class:`Method` in :data:`METHODS`. What an entry says:

* ``aggregator``: how the coordinator combines the sites' updates — a key of
  :data:`fedmi.server.strategy.AGGREGATORS` (Flower's FedAvg, FedProx or FedAdam with
  fedmi's inbound checks);
* ``harmonization``: which site-local layers the model has
  (:class:`fedmi.shared.harmonization.HarmonizationSpec`; ``None``: the plain model);
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

from fedmi.shared.harmonization import HarmonizationSpec, HarmonizedNet
from fedmi.shared.model import FedmiNet, ModelSpec, build_model


@dataclass(frozen=True)
class Method:
    """One training method (see the module docstring)."""

    name: str
    summary: str
    aggregator: str = "fedavg"
    harmonization: HarmonizationSpec | None = None
    adapts: bool = False
    federated: bool = True

    def build_model(self, spec: ModelSpec | None = None, n_groups: int = 1) -> FedmiNet:
        """The method's model: plain :func:`~fedmi.shared.model.build_model` unless harmonized.

        The federated part does not depend on ``n_groups`` (only the local layers do), so
        the server builds its initial weights with ``n_groups=1``.
        """
        spec = spec or ModelSpec()
        if self.harmonization is None:
            return build_model(spec)
        return HarmonizedNet(spec, self.harmonization, max(1, int(n_groups)))


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


def build_method_model(method: str, spec: ModelSpec | None = None, n_groups: int = 1) -> FedmiNet:
    """The model of the method named ``method`` (see :meth:`Method.build_model`)."""
    return get_method(method).build_model(spec, n_groups)
