"""Lazy Adam on sparse gradients: dense Adam's update on the rows a batch touches, nothing
on the others."""

from __future__ import annotations

import pytest
import torch

from tabembed.models import DotBias
from tabembed.training.optimizer_step import optimizer_step


def _run(sparse: bool, optimizer_class, codes_per_step, **options):
    torch.manual_seed(0)
    model = DotBias(n_users=6, n_items=5, n_factors=3)
    model.set_sparse_gradients(sparse)
    optimizer = optimizer_class(model.parameters(), lr=0.05, fused=True, **options)
    model.train()
    for codes in codes_per_step:
        for parameter in model.parameters():
            parameter.grad = None
        output = model(codes, torch.zeros(len(codes), 0))
        ((output - 3.0) ** 2).mean().add(0.1 * model.embedding_penalty(codes)).backward()
        if sparse:
            assert model.user_factors.weight.grad.is_sparse
        optimizer_step(optimizer)
    return model, optimizer


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("optimizer_class, options", [
    (torch.optim.AdamW, {"weight_decay": 0.1}), (torch.optim.Adam, {"weight_decay": 0.1}),
    (torch.optim.Adam, {})])
def test_lazy_adam_equals_dense_adam_when_every_row_is_touched(optimizer_class, options, fused,
                                                               monkeypatch):
    from tabembed.training import lazy_adam

    if not fused:     # the update written out, for a torch without the fused kernel
        monkeypatch.setattr(lazy_adam, "KERNELS", (None, None))
    # Every user 1..5 and item 1..4 in every batch (code 0, the unknown, never learns).
    codes = [torch.stack([torch.randperm(5) + 1, torch.randint(1, 5, (5,))], 1)
             for _ in range(4)]
    for batch in codes:
        batch[:4, 1] = torch.randperm(4) + 1
    dense, _ = _run(False, optimizer_class, codes, **options)
    lazy, optimizer = _run(True, optimizer_class, codes, **options)
    for want, got in zip(dense.parameters(), lazy.parameters(), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    state = optimizer.state[lazy.user_factors.weight]
    assert set(state) == {"step", "exp_avg", "exp_avg_sq"} and float(state["step"]) == 4


def test_lazy_adam_leaves_untouched_rows_and_their_moments_alone():
    first = torch.tensor([[1, 1], [2, 2]])
    later = torch.tensor([[3, 3], [4, 4]])
    model, optimizer = _run(True, torch.optim.AdamW, [first])
    before = model.user_factors.weight.detach().clone()
    moments = optimizer.state[model.user_factors.weight]["exp_avg"].clone()
    model.train()
    for parameter in model.parameters():
        parameter.grad = None
    model(later, torch.zeros(2, 0)).sum().backward()
    optimizer_step(optimizer)
    after = model.user_factors.weight.detach()
    torch.testing.assert_close(after[[0, 1, 2, 5]], before[[0, 1, 2, 5]], rtol=0, atol=0)
    assert not torch.equal(after[3], before[3])
    state = optimizer.state[model.user_factors.weight]["exp_avg"]
    torch.testing.assert_close(state[[1, 2]], moments[[1, 2]], rtol=0, atol=0)
    assert after[0].abs().sum() == 0                          # the unknown code's row


def test_recommenders_train_large_tables_with_sparse_gradients(monkeypatch):
    """Above SPARSE_TABLE_MIN_ROWS the rating model and the ranker train lazily and still
    learn a known answer (lowered here so that a small problem qualifies)."""
    import numpy as np
    import pandas as pd

    from tabembed import defaults as module
    from tabembed.recommenders import EmbeddingRecommender, ImplicitRecommender

    rng = np.random.default_rng(0)
    users, items = rng.normal(0, 1, (120, 2)), rng.normal(0, 1, (80, 2))
    pairs = np.argwhere(rng.random((120, 80)) < 0.5)
    rating = 3 + (users[pairs[:, 0]] * items[pairs[:, 1]]).sum(1) + rng.normal(0, 0.1, len(pairs))
    X = pd.DataFrame({"user": pairs[:, 0], "item": pairs[:, 1]})
    order = rng.permutation(len(X))
    train, test = order[:4000], order[4000:]
    errors = {}
    for threshold in (10**9, 10):
        monkeypatch.setattr(module, "SPARSE_TABLE_MIN_ROWS", threshold)
        fitted = EmbeddingRecommender(n_factors=8, epochs=30, lr=1e-2, y_range=None,
                                      weight_decay=0.0, ranking="rating", random_state=0).fit(
            X.iloc[train], rating[train])
        assert fitted.model_.user_factors.sparse == (threshold == 10)
        errors[threshold] = np.sqrt(np.mean((fitted.predict(X.iloc[test]) - rating[test]) ** 2))
    assert errors[10] < 0.6 * rating.std(), errors
    assert errors[10] < 1.25 * errors[10**9], errors
    # The ranker: users of group g interact with items of group g only.
    group_rows = [(u, i) for u in range(90) for i in rng.choice(np.arange(u % 3, 60, 3), 8,
                                                                   replace=False)]
    frame = pd.DataFrame(group_rows, columns=["user", "item"])
    ranker = ImplicitRecommender(n_factors=8, epochs=30, lr=2e-2, batch_size=64,
                                 n_negatives=8, random_state=0).fit(frame)
    assert ranker.model_.item_factors.sparse
    lists = ranker.recommend(list(range(90)), k=5)
    assert np.mean((lists["item"] % 3) == (lists["user"] % 3)) > 0.9


def test_gradient_clipping_takes_sparse_gradients():
    from types import SimpleNamespace

    from tabembed.training.callbacks import GradientClipping

    def gradients(sparse: bool):
        torch.manual_seed(0)
        model = DotBias(n_users=6, n_items=5, n_factors=3).train()
        model.set_sparse_gradients(sparse)
        codes = torch.tensor([[1, 2], [3, 2], [1, 4]])
        (model(codes, torch.zeros(3, 0)) * 100).sum().backward()
        GradientClipping(max_norm=0.5).on_after_backward(SimpleNamespace(model=model,
                                                                         scaler=None))
        return [p.grad.to_dense() for p in model.parameters()]

    dense, sparse = gradients(False), gradients(True)
    for want, got in zip(dense, sparse, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)
    assert torch.sqrt(sum(g.pow(2).sum() for g in sparse)) == pytest.approx(0.5, rel=1e-4)
