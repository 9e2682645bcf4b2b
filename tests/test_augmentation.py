import numpy as np
import pytest
import torch
from torch import nn

from tabembed.models import EntityEmbeddingMLP, loss_for_task
from tabembed.models.augmentation import EmbeddingMixup, MixupLoss, SwapNoise


def test_swap_noise_keeps_each_columns_marginal_distribution():
    torch.manual_seed(0)
    n = 200_000
    codes = torch.stack([torch.multinomial(torch.tensor([0.7, 0.2, 0.1]), n, True),
                         torch.multinomial(torch.tensor([0.05, 0.15, 0.3, 0.5]), n, True)], 1)
    noise = SwapNoise(p=0.3).train()
    swapped = noise(codes)
    for j, cardinality in enumerate((3, 4)):
        before = torch.bincount(codes[:, j], minlength=cardinality).double() / n
        after = torch.bincount(swapped[:, j], minlength=cardinality).double() / n
        torch.testing.assert_close(after, before, atol=4e-3, rtol=0)
    # A swapped cell differs with probability p * (1 - sum of squared frequencies).
    changed = (swapped != codes).double().mean(0)
    expected = 0.3 * (1 - torch.tensor([0.7**2 + 0.2**2 + 0.1**2,
                                        0.05**2 + 0.15**2 + 0.3**2 + 0.5**2]))
    torch.testing.assert_close(changed, expected.double(), atol=5e-3, rtol=0)


def test_swap_noise_takes_values_from_the_same_column_and_is_off_in_eval():
    x = torch.arange(40.0).reshape(10, 4)   # column j holds 4 i + j: its origin is visible
    noise = SwapNoise(p=0.5).train()
    swapped = noise(x)
    assert ((swapped - torch.arange(4.0)) % 4 == 0).all()
    assert not torch.equal(swapped, x)
    noise.eval()
    assert torch.equal(noise(x), x)
    with pytest.raises(ValueError, match="swap noise"):
        SwapNoise(p=1.0)


def test_mixup_mixes_rows_and_the_loss_mixes_targets_the_same_way():
    torch.manual_seed(0)
    mixup = EmbeddingMixup(alpha=0.4).train()
    h = torch.randn(16, 3)
    mixed = mixup(h)
    lam, permutation = mixup.mixing
    assert 0.5 <= lam <= 1
    torch.testing.assert_close(mixed, lam * h + (1 - lam) * h[permutation])
    output, target = torch.randn(16, 1), torch.randint(0, 2, (16,)).float()
    base = loss_for_task("binary")
    loss = MixupLoss(base, mixup)(output, target)
    # BCE is linear in its target: mixing the losses is BCE against the mixed target.
    soft = lam * target + (1 - lam) * target[permutation]
    torch.testing.assert_close(loss, nn.functional.binary_cross_entropy_with_logits(
        output.reshape(-1), soft))
    # The mixing is consumed: the next call (a validation pass) is the plain loss.
    torch.testing.assert_close(MixupLoss(base, mixup)(output, target), base(output, target))
    # Sample weights follow their rows: the partner's term takes the partner's weight.
    weight = torch.rand(16) + 0.5
    mixup(h)
    lam, permutation = mixup.mixing
    weighted = MixupLoss(base, mixup)(output, target, weight)
    torch.testing.assert_close(weighted, lam * base(output, target, weight) + (1 - lam) * base(
        output, target[permutation], weight[permutation]))


def test_mixup_and_swap_noise_are_training_only_inside_the_model():
    model = EntityEmbeddingMLP(embedding_sizes=[(9, 4)], n_continuous=3, swap_noise=0.3,
                               mixup_alpha=1.0, dropout=0.0).eval()
    codes, continuous = torch.randint(0, 9, (32, 1)), torch.randn(32, 3)
    torch.testing.assert_close(model(codes, continuous), model(codes, continuous))
    assert model.mixup.mixing is None
    model.train()
    model(codes, continuous)
    assert model.mixup.mixing is not None


def test_label_smoothing_moves_binary_targets_towards_one_half():
    output, target = torch.randn(50, 1), torch.randint(0, 2, (50,)).float()
    smoothed = loss_for_task("binary", label_smoothing=0.1)(output, target)
    expected = nn.functional.binary_cross_entropy_with_logits(output[:, 0], target * 0.9 + 0.05)
    torch.testing.assert_close(smoothed, expected)
    torch.testing.assert_close(loss_for_task("binary", label_smoothing=0.0)(output, target),
                               nn.BCEWithLogitsLoss()(output[:, 0], target))
    with pytest.raises(ValueError, match="classification"):
        loss_for_task("regression", label_smoothing=0.1)
    assert np.isfinite(float(loss_for_task("multiclass", label_smoothing=0.1)(
        torch.randn(4, 3), torch.tensor([0, 1, 2, 0]))))
