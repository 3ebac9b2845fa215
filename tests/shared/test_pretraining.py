"""Masked-image pretraining (shared part): masks, decoder, loss, key split, encoder transfer."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fedmi.shared.harmonization import build_method_model, with_groups
from fedmi.shared.model import ModelSpec, build_model, federated_state_dict, local_state_dict
from fedmi.shared.pretraining import (
    CLASSIFIER_ENCODER_PREFIX,
    ENCODER_PREFIX,
    PretrainNet,
    decoder_keys,
    encoder_keys,
    masked_reconstruction_loss,
    patch_counts,
    random_patch_mask,
    set_linear_probe,
    split_pretrained_state,
    transfer_encoder,
)

SMALL = ModelSpec(
    in_shape=(1, 16, 16, 16),
    channels=(4, 8),
    strides=(2, 2),
    embedding=8,
    dropout=0.0,
    num_groups=2,
    arch="cnn",
)


def _net(seed: int = 0, spec: ModelSpec = SMALL) -> PretrainNet:
    torch.manual_seed(seed)
    return PretrainNet(build_model(spec))


# --- masks -------------------------------------------------------------------------------


def test_mask_hides_the_asked_share_of_patches_on_the_default_grid():
    m = random_patch_mask(5, (40, 48, 40), patch_size=8, mask_ratio=0.6, seed=1)
    assert m.shape == (5, 1, 40, 48, 40) and m.dtype == torch.bool
    # 5 × 6 × 5 = 150 patches, 90 hidden, in every scan
    assert m.flatten(1).float().mean(1).tolist() == pytest.approx([0.6] * 5)
    # whole patches: each 8³ block is all hidden or all visible
    blocks = m[:, 0].reshape(5, 5, 8, 6, 8, 5, 8).float().mean(dim=(2, 4, 6))
    assert torch.all((blocks == 0) | (blocks == 1))


def test_mask_is_deterministic_per_seed_and_differs_across_seeds_and_scans():
    a = random_patch_mask(4, (16, 16, 16), patch_size=4, mask_ratio=0.5, seed=7)
    b = random_patch_mask(4, (16, 16, 16), patch_size=4, mask_ratio=0.5, seed=7)
    c = random_patch_mask(4, (16, 16, 16), patch_size=4, mask_ratio=0.5, seed=8)
    g = torch.Generator().manual_seed(7)
    d = random_patch_mask(4, (16, 16, 16), patch_size=4, mask_ratio=0.5, generator=g)
    assert torch.equal(a, b) and torch.equal(a, d)
    assert not torch.equal(a, c)
    assert not torch.equal(a[0], a[1])


def test_partial_patches_at_the_grid_edge_and_anisotropic_patches():
    m = random_patch_mask(2, (10, 12, 9), patch_size=(4, 6, 3), mask_ratio=0.5, seed=0)
    assert m.shape == (2, 1, 10, 12, 9)
    assert patch_counts((10, 12, 9), patch_size=(4, 6, 3), mask_ratio=0.5) == ((3, 2, 3), 9)


@pytest.mark.parametrize(
    ("patch_size", "ratio", "error", "match"),
    [
        (0, 0.5, ValueError, "patch_size"),
        (17, 0.5, ValueError, "patch_size"),
        ((4, 4), 0.5, TypeError, "patch_size"),
        (4.0, 0.5, TypeError, "patch_size"),
        (True, 0.5, TypeError, "patch_size"),
        (4, 0.0, ValueError, "mask_ratio"),
        (4, 1.0, ValueError, "mask_ratio"),
        (4, -0.2, ValueError, "mask_ratio"),
        (4, "0.5", TypeError, "mask_ratio"),
        (16, 0.4, ValueError, "hides at least one patch"),  # one patch: 0 of 1 masked
        (8, 0.01, ValueError, "hides at least one patch"),
    ],
)
def test_mask_parameters_are_validated(patch_size, ratio, error, match):
    with pytest.raises(error, match=match):
        random_patch_mask(1, (16, 16, 16), patch_size=patch_size, mask_ratio=ratio, seed=0)


def test_mask_count_and_seed_arguments_are_validated():
    with pytest.raises(ValueError, match="n must be"):
        random_patch_mask(-1, (16, 16, 16), seed=0)
    with pytest.raises(ValueError, match="not both"):
        random_patch_mask(1, (16, 16, 16), seed=0, generator=torch.Generator())
    with pytest.raises(ValueError, match="grid must be"):
        random_patch_mask(1, (16, 16), seed=0)


# --- loss ----------------------------------------------------------------------------------


def test_loss_ignores_unmasked_target_voxels_and_other_scans():
    g = torch.Generator().manual_seed(0)
    pred = torch.randn(3, 1, 16, 16, 16, generator=g)
    target = torch.randn(3, 1, 16, 16, 16, generator=g)
    mask = random_patch_mask(3, (16, 16, 16), patch_size=4, mask_ratio=0.5, seed=2)
    for normalize in (True, False):
        base = masked_reconstruction_loss(pred, target, mask, normalize=normalize)
        changed = target.clone()
        changed[~mask] = 1e6  # unmasked voxels only (even absurd values)
        same = masked_reconstruction_loss(pred, changed, mask, normalize=normalize)
        torch.testing.assert_close(same, base, rtol=0, atol=0)
        hit = target.clone()
        hit[0][mask[0]] += 1.0 + torch.rand(int(mask[0].sum()), generator=g)
        moved = masked_reconstruction_loss(pred, hit, mask, normalize=normalize)
        assert moved[0] != base[0]
        torch.testing.assert_close(moved[1:], base[1:], rtol=0, atol=0)  # per scan


def test_loss_is_the_mean_squared_error_on_masked_voxels():
    pred = torch.zeros(2, 1, 4, 4, 4)
    target = torch.full((2, 1, 4, 4, 4), 3.0)
    mask = torch.zeros(2, 1, 4, 4, 4, dtype=torch.bool)
    mask[0, :, :2] = True
    mask[1, :, 0, 0, 0] = True
    out = masked_reconstruction_loss(pred, target, mask, normalize=False)
    torch.testing.assert_close(out, torch.tensor([9.0, 9.0]))
    # normalised per scan: a constant target becomes 0, prediction 0 → loss 0
    torch.testing.assert_close(
        masked_reconstruction_loss(pred, target, mask), torch.zeros(2), atol=1e-6, rtol=0
    )


def test_loss_arguments_are_validated():
    x = torch.zeros(1, 1, 4, 4, 4)
    m = torch.ones(1, 1, 4, 4, 4, dtype=torch.bool)
    with pytest.raises(ValueError, match="same shape"):
        masked_reconstruction_loss(x, torch.zeros(1, 1, 4, 4, 3), m)
    with pytest.raises(TypeError, match="boolean"):
        masked_reconstruction_loss(x, x, m.float())
    with pytest.raises(ValueError, match="at least one masked voxel"):
        masked_reconstruction_loss(x, x, ~m)


# --- network and keys ------------------------------------------------------------------------


@pytest.mark.parametrize("spec", [SMALL, ModelSpec(arch="cnn", dropout=0.0)])
def test_decoder_reconstructs_the_input_grid_with_opacus_layers_only(spec):
    net = _net(0, spec)
    x = torch.randn(2, *spec.in_shape)
    mask = random_patch_mask(2, spec.in_shape[1:], patch_size=4, mask_ratio=0.5, seed=0)
    assert net(x, mask).shape == x.shape
    for module in net.decoder.modules():
        if list(module.parameters(recurse=False)):
            assert isinstance(module, nn.Conv3d | nn.GroupNorm)


def test_masked_voxels_do_not_reach_the_encoder():
    net = _net(1)
    x = torch.randn(2, *SMALL.in_shape)
    mask = random_patch_mask(2, SMALL.in_shape[1:], patch_size=4, mask_ratio=0.5, seed=0)
    y = x.clone()
    y[mask] = torch.randn(int(mask.sum()))
    net.eval()
    torch.testing.assert_close(net(x, mask), net(y, mask), rtol=0, atol=0)


def test_encoder_and_decoder_are_federated_and_the_harmonizer_local():
    classifier = build_method_model("fedmi", SMALL, n_groups=2)
    net = PretrainNet(classifier)
    fed = federated_state_dict(net)
    enc, dec = encoder_keys(fed), decoder_keys(fed)
    assert enc and dec and sorted(enc + dec) == sorted(fed)
    # what is local in the classifier (adapter, norm corrections in the stages) stays local
    renamed = {
        CLASSIFIER_ENCODER_PREFIX + k[len(ENCODER_PREFIX) :] if k.startswith(ENCODER_PREFIX) else k
        for k in local_state_dict(net)
    }
    classifier_local = set(local_state_dict(classifier))
    assert renamed and renamed <= classifier_local
    assert any(k.startswith("harmonizer.") for k in renamed)
    assert not any(k.startswith("harmonizer.") for k in fed)
    e, d = split_pretrained_state(net.state_dict())
    assert list(e) == encoder_keys(net) and list(d) == decoder_keys(net)
    # the harmonized model's group channel is split off, not reconstructed
    x = with_groups(torch.randn(2, *SMALL.in_shape), [0, 1])
    mask = random_patch_mask(2, SMALL.in_shape[1:], patch_size=4, mask_ratio=0.5, seed=0)
    assert net(x, mask).shape == (2, *SMALL.in_shape)
    assert net.image(x).shape == (2, *SMALL.in_shape)


def test_pretrain_net_shares_the_classifier_modules_and_needs_the_cnn():
    classifier = build_model(SMALL)
    net = PretrainNet(classifier)
    assert net.encoder.stages is classifier.backbone.encoder.stages
    assert net.harmonizer is classifier.harmonizer
    with pytest.raises(TypeError, match="cnn"):
        PretrainNet(build_model(ModelSpec(arch="regional")))
    with pytest.raises(ValueError, match="divisible by num_groups"):
        PretrainNet(classifier, decoder_channels=(3, 4))
    with pytest.raises(ValueError, match="one width per encoder stage"):
        PretrainNet(classifier, decoder_channels=(4,))


# --- transfer and linear probe ----------------------------------------------------------


def test_transfer_copies_exactly_the_encoder_stages_and_leaves_project_and_head_fresh():
    pretrained = _net(3)
    with torch.no_grad():  # make every pretrained tensor distinguishable
        for p in pretrained.parameters():
            p.add_(torch.randn_like(p))
    torch.manual_seed(4)
    classifier = build_model(SMALL)
    before = {k: v.clone() for k, v in classifier.state_dict().items()}
    copied = transfer_encoder(classifier, federated_state_dict(pretrained))
    after = classifier.state_dict()
    src = pretrained.state_dict()
    expected = [CLASSIFIER_ENCODER_PREFIX + k[len(ENCODER_PREFIX) :] for k in encoder_keys(src)]
    assert sorted(copied) == sorted(expected)
    for k in after:
        if k in copied:
            assert torch.equal(after[k], src[ENCODER_PREFIX + k[len(CLASSIFIER_ENCODER_PREFIX) :]])
        else:
            assert torch.equal(after[k], before[k]), k  # project, head, harmonizer untouched
    assert any(k.startswith("backbone.head.") for k in after)
    assert not any(k.startswith(("backbone.head.", "backbone.encoder.project.")) for k in copied)


def test_transfer_refuses_mismatched_weights():
    classifier = build_model(SMALL)
    state = federated_state_dict(_net(0))
    with pytest.raises(KeyError, match="no encoder.stages"):
        transfer_encoder(classifier, {})
    partial = {k: v for k, v in state.items() if not k.endswith("conv.weight")}
    with pytest.raises(KeyError, match="missing"):
        transfer_encoder(classifier, partial)
    other = federated_state_dict(_net(0, ModelSpec(arch="cnn", dropout=0.0)))
    with pytest.raises((KeyError, ValueError)):
        transfer_encoder(classifier, other)


def test_linear_probe_trains_only_project_and_head():
    classifier = build_method_model("fedmi", SMALL, n_groups=2)
    names = set(set_linear_probe(classifier))
    assert names and all(
        n.startswith(("backbone.encoder.project.", "backbone.head.")) for n in names
    )
    restored = set(set_linear_probe(classifier, enabled=False))
    assert restored == {n for n, _ in classifier.named_parameters()}
    with pytest.raises(TypeError, match="bool"):
        set_linear_probe(classifier, enabled=1)
    with pytest.raises(TypeError, match="cnn"):
        set_linear_probe(build_model(ModelSpec(arch="regional")))
