"""The direct fused Adam/AdamW step against torch's own step: the same weights bit for bit."""

from __future__ import annotations

import copy

import pytest
import torch

from tabembed.training.optimizer_step import (
    _PLANS,
    _gradients,
    clear_gradients,
    optimizer_step,
)


def _direct_path(optimizer) -> bool:
    """Whether this step can take the direct path (the plan exists or can be made)."""
    found = _gradients(optimizer)
    return found is not None and all(optimizer.state.get(weight) for weight in found[0])


def _weights(seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    shapes = [(7, 5), (5,), (3, 7), (3,), (11, 4), (1,)]
    return [torch.nn.Parameter(torch.randn(*s, generator=generator)) for s in shapes]


def _groups(weights):
    # Different rates and decays per group, two of them with the same settings.
    return [{"params": weights[:2], "lr": 1e-2, "weight_decay": 0.1},
            {"params": weights[2:4], "lr": 3e-3, "weight_decay": 0.0},
            {"params": weights[4:], "lr": 1e-2, "weight_decay": 0.1}]


def _train(direct: bool, optimizer_class, steps: int = 6, *, weights=None, optimizer=None,
           first: int = 0):
    if weights is None:
        weights = _weights()
        optimizer = optimizer_class(_groups(weights), fused=True)
    for step in range(first, first + steps):
        generator = torch.Generator().manual_seed(100 + step)     # resumable runs agree
        clear_gradients(optimizer)
        for index, weight in enumerate(weights):
            if step % 3 == 2 and index == 3:
                continue        # a weight without a gradient this step is skipped
            weight.grad = torch.randn(weight.shape, generator=generator)
        for group in optimizer.param_groups:
            group["lr"] *= 0.9                     # a schedule changes rates every step
        if direct:
            optimizer_step(optimizer)
        else:
            optimizer.step()
    return weights, optimizer


@pytest.mark.parametrize("optimizer_class", [torch.optim.AdamW, torch.optim.Adam])
def test_direct_step_equals_torch_step_bit_for_bit(optimizer_class):
    stock, stock_optimizer = _train(False, optimizer_class)
    direct, direct_optimizer = _train(True, optimizer_class)
    assert _direct_path(direct_optimizer), "the direct path was not taken"
    assert _PLANS.get(direct_optimizer) is not None
    for got, want in zip(direct, stock, strict=True):
        assert torch.equal(got, want)
    for got, want in zip(direct_optimizer.state.values(), stock_optimizer.state.values(),
                         strict=True):
        for key in ("step", "exp_avg", "exp_avg_sq"):
            assert torch.equal(got[key], want[key])


def test_direct_step_defers_to_torch_where_it_must():
    weights = _weights()
    optimizer = torch.optim.AdamW(_groups(weights), fused=True)
    for weight in weights:
        weight.grad = torch.ones_like(weight)
    assert not _direct_path(optimizer)          # no state yet: torch's lazy init
    optimizer_step(optimizer)
    assert _direct_path(optimizer)
    calls = []
    handle = optimizer.register_step_pre_hook(lambda *args: calls.append(1))
    assert not _direct_path(optimizer)          # hooks run in torch's step
    optimizer_step(optimizer)
    assert calls == [1]
    handle.remove()
    unfused = torch.optim.AdamW(_groups(_weights()))
    assert not _direct_path(unfused)
    sgd = torch.optim.SGD(_weights(), lr=0.1)
    assert not _direct_path(sgd)
    clear_gradients(optimizer)
    assert all(weight.grad is None for weight in weights)


def test_direct_step_resumes_from_a_saved_state_like_torch():
    # The plan keeps each weight's step count as a view of one tensor per call; a state
    # dict saved and loaded into a fresh optimizer must resume exactly as torch's own.
    stock, stock_optimizer = _train(False, torch.optim.AdamW, steps=7)
    weights, optimizer = _train(True, torch.optim.AdamW, steps=4)
    saved = copy.deepcopy(optimizer.state_dict())
    resumed_weights = [torch.nn.Parameter(w.detach().clone()) for w in weights]
    resumed = torch.optim.AdamW(_groups(resumed_weights), fused=True)
    resumed.load_state_dict(saved)
    _train(True, torch.optim.AdamW, steps=3, weights=resumed_weights, optimizer=resumed,
           first=4)
    for got, want in zip(resumed_weights, stock, strict=True):
        assert torch.equal(got, want)
    assert [float(s["step"]) for s in resumed.state.values()] == \
        [float(s["step"]) for s in stock_optimizer.state.values()]


@pytest.mark.parametrize("edit", ["clear", "reset one"])
def test_direct_step_follows_a_state_edited_between_steps(edit):
    # torch's step reads the state at every call; the plan must notice an edited one
    # (steps 3 and 4 have the same weights with gradients, so only the edit can tell).
    runs = []
    for direct in (False, True):
        weights, optimizer = _train(direct, torch.optim.AdamW, steps=4)
        if edit == "clear":
            optimizer.state.clear()              # torch starts the moments again
        else:
            optimizer.state[weights[0]]["step"] = torch.tensor(0.0)
        _train(direct, torch.optim.AdamW, steps=3, weights=weights, optimizer=optimizer,
               first=4)
        runs.append((weights, optimizer))
    (stock, stock_optimizer), (direct, direct_optimizer) = runs
    for got, want in zip(direct, stock, strict=True):
        assert torch.equal(got, want)
    assert [float(s["step"]) for s in direct_optimizer.state.values()] == \
        [float(s["step"]) for s in stock_optimizer.state.values()]
