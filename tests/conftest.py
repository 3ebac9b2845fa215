"""Test options shared by the whole suite."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
os.environ.setdefault("FLWR_DISABLE_UPDATE_CHECK", "1")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--slow", action="store_true", help="also run the slow end-to-end tests")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--slow"):
        return
    skip = pytest.mark.skip(reason="slow: run with --slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def flower_identity():
    """Let tests build Flower Messages outside a run.

    Flower 1.42 stamps every new Message with the process's task identity, which only a
    running SuperLink/SuperNode sets (internal API: kept in this one fixture).
    """
    from flwr.supercore.task_identity import TaskIdentity

    saved = (TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id)
    TaskIdentity.run_id = 1
    TaskIdentity.node_id = 0
    TaskIdentity.task_id = 1
    yield TaskIdentity
    TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id = saved


@pytest.fixture(scope="session")
def tiny_fdg(tmp_path_factory):
    """A generated 3-site tiny fdg-ad federation (2 train + 1 holdout), made once per session."""
    from fedmi.simulations.generator import generate_federation

    root = tmp_path_factory.mktemp("tiny-fdg") / "data"
    generate_federation(root, task="fdg-ad", preset="tiny", seed=0)
    return root


@pytest.fixture
def ingested():
    """Ingest a site's DICOM into ``state_dir/ingest``, where its ClientApp reads it.

    Ingest is an explicit step in fedmi (``fedmi-site ingest``): a site that has not
    ingested answers ``no-data``.
    """
    from pathlib import Path

    from fedmi.client.ingest.pipeline import ingest_site

    def ingest(site_dir, state_dir, task: str = "fdg-ad"):
        ingest_site(Path(site_dir), task, Path(state_dir) / "ingest")
        return Path(state_dir)

    return ingest


@pytest.fixture
def sigints():
    """Record the SIGINTs sent to this process instead of acting on them.

    Flower 1.42 stops a process by sending it SIGINT from inside its HTTP retry (on a 401)
    and its task heartbeat; fedmi's long-lived deployed processes must not get one.
    """
    import signal

    seen: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, _frame: seen.append(signum))
    yield seen
    signal.signal(signal.SIGINT, previous)
