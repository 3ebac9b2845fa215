"""Pose settings: reproducible from the seed, within their ranges, legacy draws unchanged."""

from __future__ import annotations

import numpy as np
import pytest

from fedmi.simulations.phantom.poses import POSES, get_poses
from fedmi.simulations.phantom.tasks import draw_subject
from fedmi.simulations.subjects import pose_rng, subject_rng

_ARGS = dict(group_probs={"CN": 0.5, "AD": 0.5})


def _draw(poses: str, j: int, task: str = "fdg-ad"):
    pose = get_poses(poses)
    return draw_subject(
        task,
        subject_rng(7, 1, j),
        **_ARGS,
        pose=pose,
        pose_rng=None if pose.legacy else pose_rng(7, 1, j),
    )


@pytest.mark.parametrize("poses", list(POSES))
def test_poses_are_reproducible_from_the_seed(poses: str) -> None:
    assert [_draw(poses, j) for j in range(5)] == [_draw(poses, j) for j in range(5)]
    assert _draw(poses, 0) != _draw(poses, 1)


def test_pose_settings_change_only_the_pose() -> None:
    for j in range(10):
        legacy, real, aligned = (_draw(p, j) for p in ("legacy", "realistic", "aligned"))
        for t in (real, aligned):
            assert (t.group, t.age, t.severity, t.regional, t.shift_mm) == (
                legacy.group,
                legacy.age,
                legacy.severity,
                legacy.regional,
                legacy.shift_mm,
            )
        assert real.atrophy == aligned.atrophy
        assert aligned.rotation_deg == (0.0, 0.0, 0.0) and aligned.scale == (1.0, 1.0, 1.0)
        assert aligned.fov_cut_mm == 0.0 and legacy.atrophy == 0.0 and legacy.fov_cut_mm == 0.0


def test_legacy_draws_are_those_of_earlier_versions() -> None:
    t = draw_subject("fdg-ad", subject_rng(7, 1, 3), **_ARGS)  # no pose arguments
    assert _draw("legacy", 3) == t
    assert max(abs(r) for r in t.rotation_deg) <= 5.0


def test_realistic_ranges() -> None:
    ts = [_draw("realistic", j) for j in range(300)]
    rot = np.array([t.rotation_deg for t in ts])
    scale = np.array([t.scale for t in ts])
    assert np.abs(rot).max() <= 20.0 and np.abs(rot[:, 0]).max() > 15.0
    assert np.abs(scale - 1).max() <= 0.12 + 1e-9 and np.abs(scale - 1).max() > 0.08
    cuts = np.array([t.fov_cut_mm for t in ts])
    assert 0.04 < np.mean(cuts != 0) < 0.18
    assert np.all((np.abs(cuts) == 0) | ((np.abs(cuts) >= 5) & (np.abs(cuts) <= 20)))
    atrophy = {g: np.mean([t.atrophy for t in ts if t.group == g]) for g in ("CN", "AD")}
    assert atrophy["AD"] > atrophy["CN"] + 0.2


def test_realistic_poses_need_the_pose_stream() -> None:
    with pytest.raises(ValueError, match="pose stream"):
        draw_subject("fdg-ad", subject_rng(7, 1, 0), **_ARGS, pose=POSES["realistic"])
