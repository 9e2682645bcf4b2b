import math

import numpy as np
import pytest
import torch
from torch import nn

from tabembed.models import EntityEmbeddingMLP, loss_for_task
from tabembed.models.numeric_embeddings import (
    PerFeatureLinear,
    Periodic,
    PeriodicEmbeddings,
    cos_sin,
    periodic_linear_relu,
)
from tabembed.training.learner import Learner


def test_periodic_is_cosines_then_sines_of_the_frequencies():
    periodic = Periodic(n_features=2, n_frequencies=3, frequency_init_scale=1.0)
    x = torch.tensor([[0.5, -1.0], [2.0, 0.25]])
    output = periodic(x)
    assert output.shape == (2, 2, 6)
    phase = 2 * math.pi * periodic.weight.detach()[None] * x[:, :, None]
    torch.testing.assert_close(output, torch.cat([phase.cos(), phase.sin()], -1))


def test_frequencies_start_as_a_truncated_normal_of_the_given_scale():
    torch.manual_seed(0)
    weight = Periodic(n_features=50, n_frequencies=200, frequency_init_scale=7.0).weight
    assert weight.abs().max() <= 21.0
    assert 6.0 < float(weight.detach().std()) < 7.5   # truncation at 3 std shrinks it slightly


def test_per_feature_linear_is_one_linear_layer_per_feature():
    layer = PerFeatureLinear(n_features=3, d_in=4, d_out=2)
    x = torch.randn(5, 3, 4)
    expected = torch.stack([x[:, j] @ layer.weight[j] + layer.bias[j] for j in range(3)], 1)
    torch.testing.assert_close(layer(x), expected)


def test_plr_shapes_and_the_lite_variant_shares_its_linear_layer():
    full = PeriodicEmbeddings(n_features=6, d_embedding=24, n_frequencies=48)
    lite = PeriodicEmbeddings(n_features=6, d_embedding=24, n_frequencies=48, lite=True)
    x = torch.randn(10, 6)
    assert full(x).shape == lite(x).shape == (10, 6 * 24) and full.d_out == 144
    assert (full(x) >= 0).all()   # ReLU
    assert isinstance(lite.linear, nn.Linear)
    count = sum(p.numel() for p in full.parameters()) - sum(p.numel() for p in lite.parameters())
    assert count == 5 * (96 * 24 + 24)


def test_plr_inside_the_mlp_and_its_errors():
    model = EntityEmbeddingMLP(embedding_sizes=[(5, 3)], n_continuous=4,
                               continuous_embedding="plr", d_embedding=8, n_frequencies=16)
    assert model.body[0][0].in_features == 3 + 4 * 8
    assert model(torch.randint(0, 5, (7, 1)), torch.randn(7, 4)).shape == (7, 1)
    with pytest.raises(ValueError, match="not both"):
        EntityEmbeddingMLP(embedding_sizes=[], n_continuous=1, continuous_embedding="plr",
                           continuous_bins=[[0.0, 1.0]])
    with pytest.raises(ValueError, match="continuous_embedding must be one of"):
        EntityEmbeddingMLP(embedding_sizes=[], n_continuous=1, continuous_embedding="periodic")
    with pytest.raises(ValueError, match="frequency_init_scale"):
        PeriodicEmbeddings(n_features=2, frequency_init_scale=0.0)


def _fit_r2(continuous_embedding, seed=0):
    """R^2 on held-out rows of y = sin(2 pi 2 x0) + 0.3 x1, a target with oscillations."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(4000, 2, generator=generator) * 4 - 2
    y = torch.sin(2 * math.pi * 2 * x[:, 0]) + 0.3 * x[:, 1]
    train, test = slice(0, 3000), slice(3000, None)
    torch.manual_seed(seed)
    model = EntityEmbeddingMLP(embedding_sizes=[], n_continuous=2, hidden=(64, 64), dropout=0.0,
                               continuous_embedding=continuous_embedding,
                               frequency_init_scale=1.0)
    codes = torch.zeros((4000, 0), dtype=torch.int64)
    learner = Learner(model, loss_for_task("regression"), (codes[train], x[train], y[train]),
                      batch_size=128, random_state=seed, device="cpu")
    learner.fit(6, 3e-3, schedule="one_cycle")
    prediction = learner.predict((codes[test], x[test])).reshape(-1)
    residual = float(((prediction - y[test]) ** 2).mean())
    return 1 - residual / float(y[test].var())


def test_plr_learns_an_oscillating_target_that_raw_inputs_cannot():
    plr, raw = _fit_r2("plr"), _fit_r2(None)
    assert plr > 0.8, plr
    assert raw < 0.5, raw
    assert np.isfinite([plr, raw]).all()


def test_one_node_plr_gives_the_plain_modules_values_and_gradients():
    torch.manual_seed(0)
    fast = PeriodicEmbeddings(n_features=5, d_embedding=8, n_frequencies=12,
                              frequency_init_scale=2.0)
    x = torch.randn(64, 5)
    output = fast(x)
    reference = fast.activation(fast.linear(fast.periodic(x))).flatten(1)
    assert (reference == 0).any() and (reference > 0).any()     # the ReLU's mask matters
    torch.testing.assert_close(output, reference, rtol=1e-5, atol=1e-6)
    weights = torch.randn_like(output)
    gradients = torch.autograd.grad((output * weights).sum(), list(fast.parameters()))
    expected = torch.autograd.grad((reference * weights).sum(), list(fast.parameters()))
    for got, want in zip(gradients, expected):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_one_node_plr_and_cos_sin_have_exact_gradients():
    # The hand-written backwards against finite differences in double precision,
    # every input included (the numbers too, for a model that trains its inputs).
    torch.manual_seed(0)
    phase = torch.randn(3, 7, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(cos_sin, (phase,))
    torch.testing.assert_close(cos_sin(phase),
                               torch.cat([torch.cos(phase), torch.sin(phase)], dim=-1))
    inputs = (torch.randn(7, 3, dtype=torch.float64), torch.randn(3, 4, dtype=torch.float64),
              torch.randn(3, 8, 5, dtype=torch.float64), torch.randn(3, 5, dtype=torch.float64))
    inputs = tuple(t.requires_grad_() for t in inputs)
    assert torch.autograd.gradcheck(periodic_linear_relu, inputs)
    # Only what is asked for: frozen frequencies get no gradient and cost no phase gradient.
    x, frequencies, weight, bias = (t.detach() for t in inputs)
    weight.requires_grad_()
    output = periodic_linear_relu(x, frequencies, weight, bias)
    (gradient,) = torch.autograd.grad(output.sum(), [weight])
    assert gradient.shape == weight.shape and frequencies.grad is None


def test_plr_trains_under_autocast():
    # Mixed precision (the Learner's precision="bf16"): the plain operations, autocast's
    # casts included; values close to float32's.
    torch.manual_seed(0)
    plr = PeriodicEmbeddings(n_features=3, d_embedding=8, n_frequencies=4)
    x = torch.randn(16, 3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        output = plr(x)
    output.float().sum().backward()
    assert output.dtype == torch.bfloat16
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in plr.parameters())
    torch.testing.assert_close(output.float(), plr(x).detach(), rtol=0.05, atol=0.05)
