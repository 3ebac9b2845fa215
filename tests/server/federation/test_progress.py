"""The per-round progress line (server.app.round_progress)."""

from __future__ import annotations

from fedmi.server.federation.run import round_progress


def _entry(r: int, evaluate: dict) -> dict:
    train = {"site-a": {"status": "ok", "train-loss": 0.5}, "site-b": {"status": "ok"}}
    return {"round": r, "train": train, "evaluate": evaluate, "dropped": [], "seconds": 1.25}


def test_progress_shows_the_sites_exact_auc_and_which_round_it_is_of():
    evaluated = _entry(2, {"site-a": {"auc_histogram": 0.5, "auc": 0.9}, "site-b": {"auc": 0.75}})
    line = round_progress(_entry(3, {}), 6, evaluated)
    assert line == (
        "round 3/6: 2 site(s) trained, loss 0.500; test AUC of round 2 site-a 0.90, "
        "site-b 0.75 (1.2 s)"
    )
    same = round_progress(evaluated, 6)
    assert "test AUC site-a 0.90" in same and "of round" not in same
