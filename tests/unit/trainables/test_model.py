"""The seed network: shapes, the skip connection, batch norm that is trained and switched to eval."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from trainables.model import FEATURES, SeedNet, folded_for_inference
from trainables.train import TrainParams, build_model, build_optimizer


@pytest.mark.parametrize("batch_norm", [True, False])
@pytest.mark.parametrize("skip", [True, False])
def test_logits_for_every_switch_combination(batch_norm, skip):
    model = SeedNet(batch_norm=batch_norm, skip=skip)
    assert model(torch.randn(4, 1, 28, 28)).shape == (4, 10)
    assert model.features(torch.randn(2, 1, 28, 28)).shape == (2, FEATURES) == (2, 12 * 5 * 5)


def test_skip_adds_the_flattened_features_before_the_relu():
    torch.manual_seed(0)
    model = SeedNet(batch_norm=False, skip=True).eval()
    plain = SeedNet(batch_norm=False, skip=False).eval()
    plain.load_state_dict(model.state_dict())
    images = torch.randn(3, 1, 28, 28)
    x = model.features(images)
    assert torch.allclose(model(images), model.fc2(torch.relu(model.fc1(x) + x)))
    assert torch.allclose(plain(images), plain.fc2(torch.relu(plain.fc1(x))))
    assert not torch.allclose(model(images), plain(images))


def test_batch_norm_layers_are_registered_and_optimised():
    model = build_model(TrainParams(batch_norm=True))
    norms = [m for m in model.modules() if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d))]
    assert len(norms) == 3
    optimised = {id(p) for group in build_optimizer(model, TrainParams()).param_groups for p in group["params"]}
    assert all(id(p) in optimised for norm in norms for p in norm.parameters())
    assert "features.0.1.running_mean" in model.state_dict()


def test_no_batch_norm_when_switched_off():
    model = SeedNet(batch_norm=False)
    assert not any(isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)) for m in model.modules())


def test_eval_uses_running_stats_so_a_sample_does_not_depend_on_its_batch():
    torch.manual_seed(0)
    model = SeedNet(batch_norm=True)
    model.train()
    model(torch.randn(64, 1, 28, 28) * 3 + 1)  # moves the running stats
    sample, others = torch.randn(1, 1, 28, 28), torch.randn(7, 1, 28, 28)
    model.eval()
    alone = model(sample)
    in_batch = model(torch.cat([sample, others]))[:1]
    assert torch.allclose(alone, in_batch, atol=1e-5)
    model.train()
    assert not torch.allclose(model(torch.cat([sample, sample + 1]))[:1], model(torch.cat([sample, others]))[:1])


def test_dropout_is_active_only_in_training():
    torch.manual_seed(0)
    model = SeedNet(batch_norm=False, dropout=0.5)
    images = torch.randn(4, 1, 28, 28)
    model.train()
    assert not torch.equal(model(images), model(images))
    model.eval()
    assert torch.equal(model(images), model(images))


@pytest.mark.parametrize("batch_norm", [True, False])
def test_pooling_before_the_relu_gives_the_written_order_s_outputs_and_gradients(batch_norm):
    """conv -> norm -> ReLU -> pool (the seed's order) and conv -> norm -> pool -> ReLU (computed) agree
    exactly, forward and backward, so checkpoints and registered models of either order load in both."""
    torch.manual_seed(0)
    net = SeedNet(batch_norm=batch_norm, skip=True).train()
    written = copy.deepcopy(net)
    for block in written.features[:2]:
        block[2], block[3] = nn.ReLU(), nn.MaxPool2d(2)  # back to conv, norm, ReLU, pool
    images = torch.randn(16, 1, 28, 28)
    for model in (net, written):
        model(images).square().sum().backward()
    assert torch.equal(net(images), written(images))
    for (name, a), (_, b) in zip(net.named_parameters(), written.named_parameters(), strict=True):
        assert torch.equal(a.grad, b.grad), name
    assert list(net.state_dict()) == list(written.state_dict())


@pytest.mark.parametrize("skip", [True, False])
def test_batch_norm_folded_for_inference_gives_the_same_logits_and_leaves_the_network_as_it_was(skip):
    torch.manual_seed(0)
    net = SeedNet(batch_norm=True, skip=skip, dropout=0.3).train()
    for _ in range(3):  # running statistics far from the initial 0 and 1
        net(torch.randn(64, 1, 28, 28) * 3 + 1)
    net.eval()
    before = copy.deepcopy(net.state_dict())
    folded = folded_for_inference(net)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in folded.modules())
    images = torch.randn(128, 1, 28, 28)
    with torch.inference_mode():
        assert torch.allclose(folded(images), net(images), atol=1e-5, rtol=1e-5)
        assert torch.equal(folded(images).argmax(1), net(images).argmax(1))
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())  # the trained network is untouched
    plain = SeedNet(batch_norm=False)
    assert folded_for_inference(plain) is plain  # nothing to fold
