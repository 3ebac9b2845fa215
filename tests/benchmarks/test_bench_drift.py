"""benchmarks.bench_drift: FedAvg's averaging, the IID re-split, the paired gap, one run."""

from __future__ import annotations

import pytest
import torch

from benchmarks import bench_drift as bd


def test_average_states_weights_by_examples():
    states = [{"w": torch.tensor([1.0, 2.0])}, {"w": torch.tensor([3.0, 6.0])}]
    out = bd.average_states(states, [1, 3])
    assert torch.allclose(out["w"], torch.tensor([2.5, 5.0]))


def test_iid_split_keeps_sizes_and_scans():
    parts = [
        (torch.arange(6.0).view(6, 1), torch.zeros(6)),
        (torch.arange(6.0, 10.0).view(4, 1), torch.ones(4)),
    ]
    out = bd.iid_split(parts, seed=0)
    assert [len(y) for _, y in out] == [6, 4]
    xs = torch.cat([x for x, _ in out]).flatten()
    ys = torch.cat([y for _, y in out])
    assert sorted(xs.tolist()) == list(range(10))
    assert torch.equal(ys, (xs >= 6).float())  # each scan keeps its label
    assert not torch.equal(out[0][1], parts[0][1])  # the sites' classes are mixed
    again = bd.iid_split(parts, seed=0)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(out, again, strict=True))


def test_paired_gap():
    gap, se = bd.paired_gap([0.9, 0.8, 0.7], [0.8, 0.8, 0.8])
    assert gap == pytest.approx(0.0)
    assert se == pytest.approx(0.1 / 3**0.5)
    assert bd.paired_gap([0.9], [0.8]) == (pytest.approx(0.1), None)


def test_one_run_on_a_tiny_federation(tiny_fdg, tmp_path, capsys):
    for split in ("sites", "iid"):
        summary = bd.main(
            ["--data", str(tiny_fdg), "--task", "fdg-ad", "--rounds", "2", "--seeds", "0", "1"]
            + ["--split", split]
        )
        (site,) = summary
        row = summary[site]
        assert 0.0 <= row["fedavg"] <= 1.0 and 0.0 <= row["pooled"] <= 1.0
        assert row["pooled-minus-fedavg"] == pytest.approx(row["pooled"] - row["fedavg"], abs=2e-4)
        assert row["se"] is not None
    assert '"split": "iid"' in capsys.readouterr().out


def test_a_folder_that_is_no_federation_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        bd.main(["--data", str(tmp_path)])
    assert exc.value.code == 2
    assert "not a federation root written by fedmi-sim generate" in capsys.readouterr().err
