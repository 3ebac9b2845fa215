"""The label-efficiency copy of a federation keeps N labels per training site, stratified,
and never writes into the source federation; results of several runs merge into one table
and one label-efficiency plot, and a file of another benchmark is refused."""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

import pytest

from benchmarks.bench_pretrain import main, merge, reduce_labels, summarise, write_outputs


def _labels(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def _federation(root: Path) -> None:
    sites = [("site-a", "train", 20, 10), ("site-b", "train", 6, 14), ("site-c", "holdout", 9, 9)]
    manifest = {"sites": [{"site_id": s, "role": r} for s, r, _, _ in sites]}
    root.mkdir()
    (root / "federation.json").write_text(json.dumps(manifest))
    for site, _, n_ad, n_cn in sites:
        (root / site / "dicom").mkdir(parents=True)
        (root / site / "dicom" / "scan.dcm").write_bytes(b"DICM")
        rows = [{"PatientID": f"{site}-{i}", "label": "AD"} for i in range(n_ad)]
        rows += [{"PatientID": f"{site}-{n_ad + i}", "label": "CN"} for i in range(n_cn)]
        with (root / site / "labels.csv").open("w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=["PatientID", "label"])
            w.writeheader()
            w.writerows(rows)


def test_reduce_labels(tmp_path: Path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    _federation(src)
    before = {p: p.read_bytes() for p in src.rglob("*") if p.is_file()}
    reduce_labels(src, dst, 10, seed=0)
    assert {p: p.read_bytes() for p in src.rglob("*") if p.is_file()} == before  # untouched
    a, b = _labels(dst / "site-a" / "labels.csv"), _labels(dst / "site-b" / "labels.csv")
    assert len(a) == 10 and sum(r["label"] == "AD" for r in a) == 7  # 20:10 → 7:3
    assert len(b) == 10 and sum(r["label"] == "AD" for r in b) == 3  # 6:14 → 3:7
    assert len(_labels(dst / "site-c" / "labels.csv")) == 18  # holdouts keep every label
    assert (dst / "site-a" / "dicom" / "scan.dcm").stat().st_ino == (
        src / "site-a" / "dicom" / "scan.dcm"
    ).stat().st_ino  # DICOM hard-linked, not copied
    reduce_labels(src, dst, 10, seed=0)  # again: same choice
    assert _labels(dst / "site-a" / "labels.csv") == a


def test_reduce_labels_copies_the_ingest_cache_without_linking_it(tmp_path: Path):
    """The copy's first run finds every series in its cache (no 13-minute ingest), and what
    it writes there never reaches the source federation's cache."""
    from fedmi.simulations.federated import SIM_CACHE_DIR

    src, dst = tmp_path / "src", tmp_path / "dst"
    _federation(src)
    entry = src / SIM_CACHE_DIR / "site-a" / "cache" / "0123.json"
    entry.parent.mkdir(parents=True)
    entry.write_text('{"status": "accepted"}')
    (src / SIM_CACHE_DIR / "site-a" / "data_manifest.json").write_text("{}")
    reduce_labels(src, dst, 10, seed=0)
    copied = dst / SIM_CACHE_DIR / "site-a" / "cache" / "0123.json"
    assert copied.read_text() == entry.read_text()
    assert copied.stat().st_ino != entry.stat().st_ino  # a copy: the copy's ingest writes apart
    assert not (dst / SIM_CACHE_DIR / "site-a" / "data_manifest.json").exists()  # rebuilt by it
    assert not (dst / SIM_CACHE_DIR / "site-b").exists()  # no cache, nothing made up


def _result(auc: float | None) -> dict:
    return {"seconds": 1.0, "exit": 0, "holdout_auc": {"site-e": auc, "site-f": None}}


def test_summarise_orders_label_counts_and_keeps_seeds():
    results = {
        "cnn-scratch | labels all | seed 1": _result(0.9),
        "cnn-scratch | labels all | seed 0": _result(0.8),
        "cnn-scratch | labels 20/site | seed 0": _result(0.7),
        "cnn-scratch | labels 5/site | seed 0": _result(None),
        "cnn-pretrain | labels 10/site | seed 0": _result(0.6),
    }
    groups = summarise(results)
    assert list(groups) == [
        ("cnn-pretrain", "10/site"),
        ("cnn-scratch", "5/site"),
        ("cnn-scratch", "20/site"),
        ("cnn-scratch", "all"),
    ]
    assert groups[("cnn-scratch", "all")] == [0.8, 0.9]  # seed order; a None site skipped
    assert groups[("cnn-scratch", "5/site")] == [None]


def test_merge_later_file_wins_and_writes_the_plot(tmp_path: Path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(
        json.dumps(
            {
                "cnn-scratch | labels all | seed 0": _result(0.5),
                "cnn-scratch | labels 10/site | seed 0": _result(0.7),
            }
        )
    )
    b.write_text(json.dumps({"cnn-scratch | labels all | seed 0": _result(0.99)}))
    results = merge([a, b])
    assert results["cnn-scratch | labels all | seed 0"]["holdout_auc"]["site-e"] == 0.99
    lines = write_outputs(results, tmp_path / "out")
    assert "| cnn-scratch | 10/site | 1 | 0.700 | 0.700 | — |" in lines  # no fit recorded
    assert "| cnn-scratch | all | 1 | 0.990 | 0.990 | — |" in lines
    png = tmp_path / "out" / "label_efficiency.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    only_all = write_outputs({"regional-dp | labels all | seed 0": _result(0.9)}, tmp_path / "o2")
    assert len(only_all) == 3 and not (tmp_path / "o2" / "label_efficiency.png").exists()


@pytest.mark.parametrize(
    "content, needle",
    [
        ('{"site-e": {"auc": 0.9}}', "'site-e'"),  # another benchmark's results
        ('{"cnn | labels all | seed x": {}}', "seed x"),
        ('{"cnn | labels all | seed 0": 3}', "not an object"),
        ("[1, 2]", "JSON object"),
        ("{not json", "not a readable results.json"),
    ],
)
def test_merge_refuses_a_foreign_file_naming_it(tmp_path: Path, content: str, needle: str):
    path = tmp_path / "r.json"
    path.write_text(content)
    with pytest.raises(ValueError, match="r.json") as err:
        merge([path])
    assert needle in str(err.value)


@pytest.mark.parametrize(
    "argv",
    [
        ["--out", "O"],  # neither --data nor --merge
        ["--out", "O", "--data", "D", "--merge", "r.json"],  # both
        ["--out", "O", "--data", "D", "--labels-per-site", "0"],
        ["--out", "O", "--data", "D", "--epsilon", "0"],
        ["--out", "O", "--data", "D", "--skip-all-labels"],  # nothing left to run
        ["--out", "O", "--data", "D", "--linear-probe-rounds", "7"],
        ["--out", "O", "--data", "D", "--linear-probe-rounds", "0"],
    ],
)
def test_bad_arguments_stop_before_anything_runs(tmp_path: Path, monkeypatch, argv):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert not (tmp_path / "O").exists()


def test_skip_all_labels_runs_only_the_reduced_copies(tmp_path: Path, monkeypatch):
    import benchmarks.bench_pretrain as bench

    ran: list[tuple[str, str]] = []
    monkeypatch.setattr(bench, "reduce_labels", lambda src, dst, n, seed: None)

    def fake_run(root: Path, out: Path, config: str, seed: int, epsilon: float) -> dict:
        ran.append((root.name, out.name))
        return _result(0.8)

    monkeypatch.setattr(bench, "run_variant", fake_run)
    argv = ["--data", str(tmp_path / "D"), "--out", str(tmp_path / "O")]
    argv += ["--variants", "cnn-scratch", "--labels-per-site", "20", "5", "5"]
    assert main([*argv, "--skip-all-labels"]) == 0
    assert ran == [("data-s0-5", "cnn-scratch-5site-s0"), ("data-s0-20", "cnn-scratch-20site-s0")]
    ran.clear()
    assert main(argv) == 0
    assert [out for _, out in ran] == [
        "cnn-scratch-all-s0",
        "cnn-scratch-5site-s0",
        "cnn-scratch-20site-s0",
    ]


def test_every_variant_is_a_valid_run_config():
    """What each variant passes to ``fedmi-sim run`` parses (a typo would only show hours
    into a benchmark)."""
    import benchmarks.bench_pretrain as bench
    from fedmi.shared.run_config import RunConfig

    for name, template in bench.VARIANTS.items():
        config = template.format(pretrain_rounds=2, probe_rounds=3, rounds=bench.TRAIN_ROUNDS)
        values = dict(item.split("=", 1) for item in config.split())
        for key in ("pretrain-rounds", "linear-probe-rounds", "num-server-rounds"):
            if key in values:
                values[key] = int(values[key])
        cfg = RunConfig.from_mapping(values, source=name)
        assert cfg.num_server_rounds == bench.TRAIN_ROUNDS
        assert cfg.linear_probe_rounds == {"cnn-pretrain-lp-dp": 3, "cnn-pretrain-probe-dp": 6}.get(
            name, 0
        )


def test_each_run_is_for_the_federations_own_task(tmp_path: Path):
    """An amyloid federation runs the amyloid task (fedmi-sim run's default is fdg-ad, which
    the sites' site.toml would refuse)."""
    from benchmarks.bench_pretrain import run_command

    (tmp_path / "federation.json").write_text(json.dumps({"task": "amyloid", "sites": []}))
    cmd = run_command(tmp_path, tmp_path / "out", "model=cnn", 1, 8.0)
    assert cmd[cmd.index("--task") + 1] == "amyloid"
    assert cmd[cmd.index("--seed") + 1] == "1"
    configs = [cmd[i + 1] for i, a in enumerate(cmd) if a == "--config"]
    assert configs[0] == "model=cnn" and "sim-default-epsilon=8.0" in configs


@pytest.mark.parametrize(
    "item, needle",
    [
        ("local-epoch=10", "local-epoch"),  # a typo: the key named
        ("local-epochs=ten", "local-epochs"),  # a bad value
        ("model=regional", "sets `model` itself"),  # would silently replace the variant's
        ("local-epochs", "KEY=VALUE"),
    ],
)
def test_extra_config_is_checked_before_anything_runs(tmp_path: Path, monkeypatch, item, needle):
    import benchmarks.bench_pretrain as bench

    monkeypatch.setattr(bench, "run_variant", lambda *a: pytest.fail("ran"))
    with pytest.raises(ValueError, match=needle):
        bench.extra_config([item], ["cnn-scratch"])
    argv = ["--data", str(tmp_path / "D"), "--out", str(tmp_path / "O"), "--config", item]
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--variants", "cnn-scratch"])
    assert exc.value.code == 2 and not (tmp_path / "O").exists()


def test_extra_config_reaches_every_run_and_names_the_results(tmp_path: Path, monkeypatch):
    """``--config`` settings go to each run and into the result keys and folders; the key's
    seed is the federation's own (federation.json), not its place on the command line."""
    import benchmarks.bench_pretrain as bench

    ran: list[tuple[str, str, int]] = []
    monkeypatch.setattr(bench, "reduce_labels", lambda src, dst, n, seed: None)

    def fake_run(root: Path, out: Path, config: str, seed: int, epsilon: float) -> dict:
        ran.append((out.name, config, seed))
        return _result(0.8)

    monkeypatch.setattr(bench, "run_variant", fake_run)
    data = tmp_path / "D"
    data.mkdir()
    (data / "federation.json").write_text(json.dumps({"task": "fdg-ad", "seed": 2, "sites": []}))
    argv = ["--data", str(data), "--out", str(tmp_path / "O"), "--variants", "cnn-scratch"]
    argv += ["--config", "local-epochs=10", "--config", "learning-rate=0.003"]
    assert main(argv) == 0
    assert ran == [
        (
            "cnn-scratch-local-epochs10-learning-rate0.003-all-s2",
            "model=cnn sim-default-dp=off local-epochs=10 learning-rate=0.003",
            2,
        )
    ]
    results = json.loads((tmp_path / "O" / "results.json").read_text())
    assert list(results) == [
        "cnn-scratch +local-epochs=10 +learning-rate=0.003 | labels all | seed 2"
    ]
    assert summarise(results) == {
        ("cnn-scratch +local-epochs=10 +learning-rate=0.003", "all"): [0.8]
    }


def test_federation_seed_falls_back_to_the_position(tmp_path: Path):
    from benchmarks.bench_pretrain import federation_seed

    assert federation_seed(tmp_path, 3) == 3  # no federation.json
    for doc, want in [({"seed": 1}, 1), ({"seed": -1}, 3), ({"seed": True}, 3), ({}, 3)]:
        (tmp_path / "federation.json").write_text(json.dumps(doc))
        assert federation_seed(tmp_path, 3) == want
    (tmp_path / "federation.json").write_text("{broken")
    assert federation_seed(tmp_path, 3) == 3


@pytest.fixture(scope="module")
def ingested_tiny_fdg(tiny_fdg: Path, tmp_path_factory) -> Path:
    """A hard-linked copy of the tiny federation, ingested once for this module, whose
    holdout reports an AUC at its 15 labelled scans (``min-cell-count = 1``)."""
    from fedmi.simulations.runner import ingest_all, site_settings

    data = tmp_path_factory.mktemp("bench-pretrain") / "data"
    shutil.copytree(tiny_fdg, data, copy_function=os.link, ignore=shutil.ignore_patterns(".*"))
    for toml in data.glob("*/site.toml"):
        text = toml.read_text()
        toml.unlink()  # never write through the link into the session's federation
        toml.write_text(text.replace("[site]\n", "[site]\nmin-cell-count = 1\n", 1))
    ingest_all(site_settings(data.resolve(), data.parent.resolve() / "run"), "fdg-ad")
    return data


def test_exact_holdout_auc_repeats_the_holdouts_evaluation_without_release_noise(
    ingested_tiny_fdg: Path, tmp_path: Path
):
    """The figure the benchmark compares is the holdout's exact AUC of the final model,
    not the DP release (noise sd about 0.05): it equals the Mann–Whitney AUC of the model's
    scores on the holdout's scans, and is the same on every call."""
    import torch
    from sklearn.metrics import roc_auc_score

    from benchmarks.bench_pretrain import exact_holdout_auc, training_site_auc
    from fedmi.client.data import site_data
    from fedmi.client.replies import to_state
    from fedmi.client.training.loop import predict
    from fedmi.server.report.document import load_arrays, save_arrays
    from fedmi.shared.contract.check import array_record
    from fedmi.shared.model import ModelSpec, build_model, federated_state_dict
    from fedmi.shared.run_config import RunConfig
    from fedmi.simulations.runner import site_settings

    data, run = ingested_tiny_fdg, tmp_path / "run"
    run.mkdir()
    sites = site_settings(data.resolve(), run.resolve())
    holdouts = [s for s in sites if s.role == "holdout"]
    cfg = RunConfig.from_mapping({"model": "regional", "seed": 0}, source="test")
    (run / "report.json").write_text(json.dumps({"run_config": cfg.as_dict()}))
    torch.manual_seed(3)
    model = build_model(ModelSpec(arch="regional", task="fdg-ad"))
    with torch.no_grad():  # a model whose scores are neither perfect nor constant
        for p in model.parameters():
            p.normal_(0.0, 0.5)
    state = {k: v.numpy() for k, v in federated_state_dict(model).items()}
    save_arrays(run / "final_model.npz", array_record(state))

    got = exact_holdout_auc(data, run)
    assert holdouts and set(got) == {s.site_id for s in holdouts}
    for site in holdouts:
        x, y = site_data(site, "fdg-ad", 0).subset("all")
        want = roc_auc_score(y.numpy().astype(int), predict(model.eval(), x))
        assert got[site.site_id] == pytest.approx(want, abs=1e-12)
        assert 0.0 < want < 1.0
    assert exact_holdout_auc(data, run) == got  # no noise drawn

    # the training sites' own fit: their site model (harmonization layers of the run) on
    # each split, scored exactly
    from fedmi.client.harmonization.adaptation import site_model
    from fedmi.shared.instructions import EvaluateInstruction

    fit = training_site_auc(data, run)
    trained = [s for s in sites if s.role == "train"]
    assert trained and set(fit) == {s.site_id for s in trained}
    ins = EvaluateInstruction.from_run_config(cfg)
    for site in trained:
        d = site_data(site, "fdg-ad", 0)
        for split in ("train", "test"):
            m, x, y, _ = site_model(
                site, ins, to_state(load_arrays(run / "final_model.npz")), d, split
            )
            labels = y.numpy().astype(int)
            if 0 < labels.sum() < len(labels):
                assert fit[site.site_id][split] == pytest.approx(
                    roc_auc_score(labels, predict(m, x)), abs=1e-12
                )
            else:
                assert fit[site.site_id][split] is None
    assert any(v is not None for f in fit.values() for v in f.values())


def test_rescore_replaces_released_aucs_of_finished_runs(tmp_path: Path, monkeypatch):
    """Results written before exact scoring: each finished run is scored on the federation of
    its seed (or its label count's copy), the released figure kept; a run that never finished
    keeps its entry."""
    import benchmarks.bench_pretrain as bench

    scored: list[tuple[str, str]] = []

    def fake_exact(root: Path, run: Path) -> dict:
        scored.append((root.name, run.name))
        return {"site-e": 0.99}

    monkeypatch.setattr(bench, "exact_holdout_auc", fake_exact)
    monkeypatch.setattr(
        bench, "training_site_auc", lambda root, run: {"site-a": {"train": 0.8, "test": None}}
    )
    data, out = tmp_path / "fdg2", tmp_path / "O"
    data.mkdir()
    (data / "federation.json").write_text(json.dumps({"seed": 2}))
    (out / "data-s2-10").mkdir(parents=True)
    for run in ("regional-dp-all-s2", "cnn-pretrain-local-epochs10-10site-s2"):
        (out / run).mkdir()
        (out / run / "final_model.npz").write_bytes(b"")
    results = {
        "regional-dp | labels all | seed 2": _result(0.9),
        "cnn-pretrain +local-epochs=10 | labels 10/site | seed 2": _result(0.5),
        "cnn-scratch | labels all | seed 2": _result(0.7),  # no run folder
    }
    (out / "results.json").write_text(json.dumps(results))
    assert main(["--rescore", "--data", str(data), "--out", str(out)]) == 0
    got = json.loads((out / "results.json").read_text())
    assert sorted(scored) == [
        ("data-s2-10", "cnn-pretrain-local-epochs10-10site-s2"),
        ("fdg2", "regional-dp-all-s2"),
    ]
    reg = got["regional-dp | labels all | seed 2"]
    assert reg["holdout_auc"] == {"site-e": 0.99}
    assert reg["holdout_auc_released"] == {"site-e": 0.9, "site-f": None}
    assert reg["training_site_auc"] == {"site-a": {"train": 0.8, "test": None}}
    # results.md shows whether the model learnt at the sites it trained at
    row = next(ln for ln in (out / "results.md").read_text().splitlines() if "regional-dp" in ln)
    assert row.endswith("| 0.990 | 0.990 | 0.800 |"), row
    assert got["cnn-scratch | labels all | seed 2"] == _result(0.7)
    with pytest.raises(SystemExit):
        main(["--rescore", "--out", str(out)])  # no federation given


def test_federations_of_one_seed_are_refused_before_anything_runs(tmp_path: Path, monkeypatch):
    """Two federations generated with the same seed (an FDG and an amyloid seed 0) would write
    the same result keys, the second silently replacing the first."""
    import benchmarks.bench_pretrain as bench

    monkeypatch.setattr(bench, "run_variant", lambda *a: pytest.fail("ran"))
    for name, task in [("fdg0", "fdg-ad"), ("amy0", "amyloid")]:
        (tmp_path / name).mkdir()
        doc = {"task": task, "seed": 0, "sites": []}
        (tmp_path / name / "federation.json").write_text(json.dumps(doc))
    argv = ["--data", str(tmp_path / "fdg0"), str(tmp_path / "amy0"), "--out", str(tmp_path / "O")]
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2 and not (tmp_path / "O").exists()
    with pytest.raises(ValueError, match="same seed"):
        bench.rescore({}, tmp_path / "O", [tmp_path / "fdg0", tmp_path / "amy0"])


def test_run_folder_names_the_variant_its_settings_labels_and_seed():
    from benchmarks.bench_pretrain import run_folder

    assert run_folder("regional-dp", "all", 0) == "regional-dp-all-s0"
    assert (
        run_folder("cnn-pretrain +local-epochs=10 +learning-rate=0.003", "10/site", 2)
        == "cnn-pretrain-local-epochs10-learning-rate0.003-10site-s2"
    )


def _pretrained_run(data: Path, run: Path, *, stages_seed: int | None) -> None:
    """A finished CNN run on ``data``: report.json, a seeded final model and, unless
    ``stages_seed`` is None, a pretrained_model.npz whose encoder stages are those of an
    untrained CNN made with that seed (plus a decoder key, which the ceiling ignores)."""
    import numpy as np
    import torch

    from fedmi.server.report.document import save_arrays
    from fedmi.shared.contract.check import array_record
    from fedmi.shared.model import ModelSpec, build_model, federated_state_dict
    from fedmi.shared.pretraining import ENCODER_PREFIX
    from fedmi.shared.run_config import RunConfig

    run.mkdir()
    cfg = RunConfig.from_mapping({"model": "cnn", "seed": 0}, source="test")
    (run / "report.json").write_text(json.dumps({"run_config": cfg.as_dict()}))
    torch.manual_seed(7)
    final = build_model(ModelSpec(arch="cnn", task="fdg-ad"))
    state = {k: v.numpy() for k, v in federated_state_dict(final).items()}
    save_arrays(run / "final_model.npz", array_record(state))
    if stages_seed is not None:
        torch.manual_seed(stages_seed)
        stages = build_model(ModelSpec(arch="cnn", task="fdg-ad")).backbone.encoder.stages
        pre = {ENCODER_PREFIX + k: v.numpy().copy() for k, v in stages.state_dict().items()}
        pre["decoder.out.weight"] = np.zeros((1, 8, 1, 1, 1), dtype=np.float32)
        save_arrays(run / "pretrained_model.npz", array_record(pre))


def test_probe_ceiling_reads_the_pretrained_stages_and_fits_on_train_splits_only(
    ingested_tiny_fdg: Path, tmp_path: Path
):
    """The ceiling's ``pretrained`` features come from the run's pretrained_model.npz (equal
    to the ``random`` ones exactly when those stages are the untrained CNN's of the same
    seed, different otherwise); the read-out is fitted on the training sites' train splits
    only and scored on the holdouts' scans; a run that did not pretrain is refused, naming
    the file."""
    import numpy as np
    import torch
    from sklearn.metrics import roc_auc_score

    from benchmarks.bench_pretrain import (
        CEILING_FEATURES,
        ceiling_features,
        linear_read_out,
        probe_ceiling,
        stage_features,
    )
    from fedmi.client.data import site_data
    from fedmi.shared.model import ModelSpec, build_model
    from fedmi.shared.regional import region_index
    from fedmi.shared.tasks import TEMPLATE_GRID_4MM
    from fedmi.simulations.runner import site_settings

    data = ingested_tiny_fdg
    same, other, none = tmp_path / "same", tmp_path / "other", tmp_path / "none"
    _pretrained_run(data, same, stages_seed=0)  # the ceiling's own random init (init_seed=0)
    _pretrained_run(data, other, stages_seed=5)
    _pretrained_run(data, none, stages_seed=None)
    sites = site_settings(data.resolve(), same.resolve())

    got = ceiling_features(data, same)
    want_keys = {f"{s.site_id}/train" for s in sites if s.role == "train"}
    want_keys |= {f"{s.site_id}/all" for s in sites if s.role == "holdout"}
    assert set(got) == set(CEILING_FEATURES)
    n_regions = len(region_index(TEMPLATE_GRID_4MM)[1])
    for feature_set, dims in (("pretrained", 120), ("random", 120), ("regional", n_regions)):
        assert set(got[feature_set]) == want_keys  # no holdout scan and no test split fitted
        for x, y in got[feature_set].values():
            assert x.shape == (len(y), dims) and np.isfinite(x).all()
    for key in want_keys:
        np.testing.assert_array_equal(got["pretrained"][key][0], got["random"][key][0])
    torch.manual_seed(123)  # the random encoder has its own seed, whatever the caller's state
    moved = ceiling_features(data, other)
    for key in want_keys:
        assert not np.allclose(moved["pretrained"][key][0], moved["random"][key][0])
        np.testing.assert_array_equal(moved["random"][key][0], got["random"][key][0])
        np.testing.assert_array_equal(moved["regional"][key][0], got["regional"][key][0])

    # stage_features: each stage's output averaged over space (stage 1 checked by hand)
    holdout = next(s for s in sites if s.role == "holdout")
    x, _ = site_data(holdout, "fdg-ad", 0).subset("all")
    torch.manual_seed(1)
    model = build_model(ModelSpec(arch="cnn", task="fdg-ad")).eval()
    with torch.no_grad():
        first = model.backbone.encoder.stages[0](model.harmonizer(x)).mean(dim=(2, 3, 4))
    np.testing.assert_allclose(stage_features(model, x)[:, :8], first.numpy(), rtol=1e-6)

    ceiling = linear_read_out(moved)  # probe_ceiling(data, other), without a third pass
    assert set(ceiling) == set(CEILING_FEATURES)
    assert ceiling["pretrained"]["dims"] == 120
    assert ceiling["regional"]["dims"] == n_regions
    for feature_set in CEILING_FEATURES:
        aucs = ceiling[feature_set]["holdout_auc"]
        assert set(aucs) == {holdout.site_id}
        y = moved[feature_set][f"{holdout.site_id}/all"][1]
        if 0 < y.sum() < len(y):
            assert 0.0 <= aucs[holdout.site_id] <= 1.0
    # the figure is the holdout's exact AUC of a read-out fitted on the train splits
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from benchmarks.bench_pretrain import CEILING_C

    train = [v for k, v in moved["regional"].items() if k.endswith("/train")]
    readout = make_pipeline(StandardScaler(), LogisticRegression(C=CEILING_C, max_iter=5000))
    readout.fit(np.concatenate([a for a, _ in train]), np.concatenate([b for _, b in train]))
    hx, hy = moved["regional"][f"{holdout.site_id}/all"]
    assert ceiling["regional"]["holdout_auc"][holdout.site_id] == pytest.approx(
        roc_auc_score(hy, readout.decision_function(hx)), abs=1e-12
    )

    with pytest.raises(FileNotFoundError, match="pretrained_model.npz"):
        probe_ceiling(data, none)


def test_results_md_shows_the_probe_ceiling_of_runs_that_pretrained(tmp_path: Path):
    ceiling = {
        "pretrained": {"dims": 120, "holdout_auc": {"site-e": 0.9, "site-f": 0.8}},
        "random": {"dims": 120, "holdout_auc": {"site-e": 0.95, "site-f": None}},
        "regional": {"dims": 52, "holdout_auc": {"site-e": 0.98, "site-f": 0.96}},
    }
    results = {
        "cnn-pretrain | labels all | seed 0": {**_result(0.9), "probe_ceiling": ceiling},
        "cnn-scratch | labels all | seed 0": _result(0.7),
    }
    lines = write_outputs(results, tmp_path)
    header = next(i for i, ln in enumerate(lines) if ln.startswith("| variant | labels | seed |"))
    assert lines[header] == "| variant | labels | seed | pretrained | random | regional |"
    # one cell a column: the result key's parts are columns of their own, not one cell
    assert lines[header + 2 :] == [
        "| cnn-pretrain | all | 0 | 0.850 (120) | 0.950 (120) | 0.970 (52) |"
    ]
    assert all(ln.count("|") == 7 for ln in lines[header:])
    assert not any(
        "ceiling" in ln
        for ln in write_outputs({"cnn-scratch | labels all | seed 0": _result(0.7)}, tmp_path)
    )
