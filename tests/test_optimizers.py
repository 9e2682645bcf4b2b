"""The Learner's optimizers: torch's, the same step for step, without importing torch._dynamo."""

from __future__ import annotations

import copy
import subprocess
import sys
import textwrap

import pytest
import torch

from tabembed.training import optimizers
from tabembed.training.optimizer_step import _PLANS, optimizer_step

PAIRS = [(optimizers.AdamW, torch.optim.AdamW, {"fused": True}),
         (optimizers.AdamW, torch.optim.AdamW, {}),
         (optimizers.Adam, torch.optim.Adam, {"fused": True}),
         (optimizers.SGD, torch.optim.SGD, {"momentum": 0.9})]


def _weights():
    generator = torch.Generator().manual_seed(0)
    return [torch.nn.Parameter(torch.randn(*shape, generator=generator))
            for shape in [(7, 5), (5,), (3, 7), (3,)]]


def _groups(weights):
    return [{"params": weights[:2], "lr": 1e-2, "weight_decay": 0.1},
            {"params": weights[2:], "lr": 3e-3, "weight_decay": 0.0}]


def _train(optimizer, weights, step, steps: int = 5, first: int = 0):
    for index in range(first, first + steps):
        generator = torch.Generator().manual_seed(100 + index)
        for weight in weights:
            weight.grad = torch.randn(weight.shape, generator=generator)
        step(optimizer)


def _assert_same(weights, optimizer, other_weights, other_optimizer):
    for got, want in zip(weights, other_weights, strict=True):
        assert torch.equal(got, want)
    for got, want in zip(optimizer.state.values(), other_optimizer.state.values(),
                         strict=True):
        assert got.keys() == want.keys()
        for key in got:
            assert torch.equal(torch.as_tensor(got[key]), torch.as_tensor(want[key])), key


@pytest.mark.parametrize(("ours", "theirs", "options"), PAIRS)
def test_same_steps_as_torch_bit_for_bit(ours, theirs, options):
    stock_weights, our_weights, direct_weights = _weights(), _weights(), _weights()
    stock = theirs(_groups(stock_weights), **options)
    mine = ours(_groups(our_weights), **options)
    direct = ours(_groups(direct_weights), **options)
    assert isinstance(mine, theirs)
    _train(stock, stock_weights, lambda o: o.step())
    _train(mine, our_weights, optimizers.step)       # the first step creates the state
    _train(direct, direct_weights, optimizer_step)   # the Learner's step
    _assert_same(our_weights, mine, stock_weights, stock)
    _assert_same(direct_weights, direct, stock_weights, stock)
    # The Learner's direct fused path accepts these optimizers as it does torch's.
    assert (_PLANS.get(direct) is not None) == bool(options.get("fused"))


@pytest.mark.parametrize(("ours", "theirs", "options"), PAIRS[:1] + PAIRS[3:])
def test_states_move_between_ours_and_torchs(ours, theirs, options):
    stock_weights, our_weights = _weights(), _weights()
    stock = theirs(_groups(stock_weights), **options)
    _train(stock, stock_weights, lambda o: o.step(), steps=7)
    mine = ours(_groups(our_weights), **options)
    _train(mine, our_weights, optimizers.step, steps=4)
    # Ours saved, loaded into torch's (and back into ours): both go on as one run.
    theirs_weights = [torch.nn.Parameter(w.detach().clone()) for w in our_weights]
    resumed_theirs = theirs(_groups(theirs_weights), **options)
    resumed_theirs.load_state_dict(copy.deepcopy(mine.state_dict()))
    resumed_ours = ours(_groups(our_weights), **options)
    resumed_ours.load_state_dict(copy.deepcopy(resumed_theirs.state_dict()))
    _train(resumed_theirs, theirs_weights, lambda o: o.step(), steps=3, first=4)
    _train(resumed_ours, our_weights, optimizers.step, steps=3, first=4)
    _assert_same(theirs_weights, resumed_theirs, stock_weights, stock)
    _assert_same(our_weights, resumed_ours, stock_weights, stock)


def test_hooks_and_zero_grad_behave_as_torchs():
    weights = _weights()
    optimizer = optimizers.AdamW(_groups(weights), fused=True)
    calls = []
    before = optimizer.register_step_pre_hook(lambda *args: calls.append("pre"))
    after = optimizer.register_step_post_hook(lambda *args: calls.append("post"))
    _train(optimizer, weights, optimizers.step, steps=1)
    _train(optimizer, weights, optimizer_step, steps=1)
    assert calls == ["pre", "post", "pre", "post"]
    before.remove()
    after.remove()
    optimizer.zero_grad()
    assert all(weight.grad is None for weight in weights)
    optimizer.add_param_group({"params": [torch.nn.Parameter(torch.zeros(2))], "lr": 0.5})
    assert optimizer.param_groups[-1]["lr"] == 0.5
    assert optimizer.param_groups[-1]["betas"] == optimizer.defaults["betas"]
    with pytest.raises(ValueError, match="some parameters appear in more than one"):
        optimizer.add_param_group({"params": weights[:1]})


def test_a_method_without_torchs_wrapper_is_kept():
    def plain(self):
        return self

    assert optimizers._undecorated(plain) is plain
    if hasattr(torch, "_disable_dynamo"):
        wrapped = torch._disable_dynamo(plain)
        assert wrapped is not plain and optimizers._undecorated(wrapped) is plain


def test_fits_and_fold_in_never_import_torch_dynamo():
    """A fresh process: importing torch._dynamo costs about a second, once a process
    (torch's optimizers import it on their first call); tabembed's fits and fold-in never
    trigger it."""
    script = textwrap.dedent("""
        import sys
        import numpy as np
        import pandas as pd
        from tabembed.estimators import EmbeddingMLPClassifier, EmbeddingMLPRegressor
        from tabembed.recommenders import EmbeddingRecommender

        rng = np.random.default_rng(0)
        X = pd.DataFrame({"color": rng.choice(["red", "green", "blue"], 400),
                          "size": rng.normal(size=400)})
        y = (X["size"] > 0).map({True: "big", False: "small"})
        EmbeddingMLPClassifier(epochs=2, random_state=0).fit(X, y).predict(X)
        EmbeddingMLPRegressor(epochs=2, random_state=0).fit(X, X["size"] * 2)
        ratings = pd.DataFrame({"user": rng.integers(0, 40, 2000),
                                "item": rng.integers(0, 60, 2000)})
        model = EmbeddingRecommender(epochs=2, random_state=0).fit(
            ratings, rng.integers(1, 6, 2000).astype(float))
        model.recommend_for_items([1, 2, 3], k=5, ratings=[5.0, 4.0, 1.0])
        print("torch._dynamo" in sys.modules)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "False"
