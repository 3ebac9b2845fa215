"""Site identity is the node's key: node id → site pseudonym, and who may claim what.

A reply's ``site`` record (its ``site-id``) is only what the site *says*; the node id
Flower stamps on it (``msg.metadata.src_node_id``) is bound to the key the coordinator
registered (FLOWER_NOTES, "Security of a deployment"). So:

* deployed, ``fedmi-server register --key site.pub --site NAME`` writes ``sites.json`` in
  the coordinator's state folder (:func:`add_site`), and the SuperLink (so its ServerApp)
  gets its path in :data:`REGISTRY_ENV`; a node that is not in it, or whose reply claims
  another site's pseudonym, is refused and reported;
* in the simulation engine (no registry) the first node to claim a pseudonym holds it:
  a second node claiming the same one is refused and reported.

Either way the report's row of a site can only be written by the node that holds it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

#: environment variable holding the path of the coordinator's ``sites.json``
REGISTRY_ENV = "FEDMI_SITE_REGISTRY"
REGISTRY_FILE = "sites.json"
FORMAT = 1


class RegistryError(ValueError):
    """The registry file is unusable or a registration conflicts; the message says the fix."""


def read_registry(path: Path) -> dict[int, dict[str, str]]:
    """``{node_id: {"site": pseudonym, "fingerprint": ...}}`` of ``path`` (empty if absent)."""
    path = Path(path)
    if not path.exists():
        return {}
    try:
        doc = json.loads(path.read_text())
        nodes = {int(k): dict(v) for k, v in doc["nodes"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        raise RegistryError(
            f"{path} is not a fedmi site registry: restore it from a backup, or move it away "
            "and register every site's key again"
        ) from None
    for node, entry in nodes.items():
        if not isinstance(entry.get("site"), str) or not entry["site"]:
            raise RegistryError(f"{path}: node {node} has no site pseudonym: register it again")
    return nodes


def add_site(path: Path, node_id: int, site: str, fingerprint: str) -> None:
    """Record ``node_id`` as ``site`` (file mode 0600).

    Raises
    ------
    RegistryError
        When ``site`` is already held by another node (rotate the key: unregister the old
        node first) or the node is registered under another pseudonym.
    """
    nodes = read_registry(path)
    for other, entry in nodes.items():
        if entry["site"] == site and other != node_id:
            raise RegistryError(
                f"site {site!r} is already registered as node {other}: to rotate its key, "
                f"run `fedmi-server unregister --node {other}` first"
            )
    if node_id in nodes and nodes[node_id]["site"] != site:
        raise RegistryError(f"node {node_id} is already registered as {nodes[node_id]['site']!r}")
    nodes[node_id] = {"site": site, "fingerprint": fingerprint}
    _write(path, nodes)


def remove_node(path: Path, node_id: int) -> str | None:
    """Forget ``node_id``; returns the pseudonym it held (None when it was not registered)."""
    nodes = read_registry(path)
    entry = nodes.pop(node_id, None)
    if entry is not None:
        _write(path, nodes)
    return entry["site"] if entry else None


def _write(path: Path, nodes: dict[int, dict[str, str]]) -> None:
    path = Path(path)
    doc = {"format": FORMAT, "nodes": {str(k): v for k, v in sorted(nodes.items())}}
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(doc, f, indent=1)
    os.replace(tmp, path)


@dataclass
class SiteIdentities:
    """Binds node ids to site pseudonyms for one run; refuses claims that contradict them.

    ``registered`` is the coordinator's registry (deployment) or None (simulation: the
    first node to claim a pseudonym holds it).
    """

    registered: dict[int, str] | None = None
    bound: dict[int, str] = field(default_factory=dict)
    #: refused claims: {node_id, claimed, reason}
    refusals: list[dict] = field(default_factory=list)

    @classmethod
    def from_environment(cls) -> SiteIdentities:
        """The registry named by :data:`REGISTRY_ENV`, or first-claim binding without one."""
        path = os.environ.get(REGISTRY_ENV)
        if not path:
            return cls()
        return cls({n: e["site"] for n, e in read_registry(Path(path)).items()})

    def bind(self, node_id: int, claimed: str) -> str | None:
        """The pseudonym ``node_id`` may use, or None (refusal recorded) for a false claim."""
        node_id = int(node_id)
        if self.registered is not None:
            held = self.registered.get(node_id)
            if held is None:
                return self._refuse(node_id, claimed, "node not in the coordinator's registry")
            if held != claimed:
                return self._refuse(node_id, claimed, f"node is registered as {held!r}")
        if node_id in self.bound:
            if self.bound[node_id] != claimed:
                return self._refuse(
                    node_id, claimed, f"node already answered as {self.bound[node_id]!r}"
                )
            return claimed
        holder = next((n for n, s in self.bound.items() if s == claimed), None)
        if holder is not None:
            return self._refuse(node_id, claimed, f"{claimed!r} is held by node {holder}")
        self.bound[node_id] = claimed
        return claimed

    def _refuse(self, node_id: int, claimed: str, reason: str) -> None:
        self.refusals.append({"node_id": node_id, "claimed": claimed, "reason": reason})
        return None
