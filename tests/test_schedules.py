import math

import numpy as np
import pytest
import torch

from tabembed.training.schedules import (
    SGDR,
    Constant,
    CyclicalLinear,
    CyclicalLR,
    ExponentialDecay,
    InverseTimeDecay,
    OneCycle,
    Phases,
    SlantedTriangular,
    StepDecay,
    get_schedule,
)


def _torch_rates(make_scheduler, steps, momentum=False):
    """Rates (and momenta) a torch scheduler gives, stepping once per batch."""
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=1.0, momentum=0.9)
    scheduler = make_scheduler(optimizer)
    rates, momenta = [], []
    for _ in range(steps):
        rates.append(optimizer.param_groups[0]["lr"])
        momenta.append(optimizer.param_groups[0]["momentum"])
        optimizer.step()
        scheduler.step()
    return (np.array(rates), np.array(momenta)) if momentum else np.array(rates)


def test_sgdr_cycle_mult_2_restarts_at_1_3_7_epochs():
    per_epoch = 10
    schedule = SGDR(cycle_len=1, cycle_mult=2)
    assert schedule.total_epochs(3) == 7
    rates = schedule.simulate(7, per_epoch)
    restarts = [s for s in range(1, len(rates)) if rates[s] > rates[s - 1]]
    assert restarts == [10, 30]
    assert schedule.low_points(per_epoch, 70) == [10, 30, 70]
    assert rates[0] == 1.0 and rates[10] == 1.0 and rates[30] == 1.0
    # Half-way through the 2-epoch cycle the cosine is at its middle.
    assert rates[20] == pytest.approx(0.5)
    assert rates[69] == pytest.approx(_cos_end(40), abs=1e-12)
    reference = _torch_rates(lambda o: torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(
        o, T_0=per_epoch, T_mult=2), 70)
    np.testing.assert_allclose(rates, reference, atol=1e-12)


def _cos_end(length):
    return (1 + math.cos(math.pi * (length - 1) / length)) / 2


def test_sgdr_cycle_mult_1_and_min_fraction():
    schedule = SGDR(cycle_len=2, cycle_mult=1, min_fraction=0.1)
    rates = schedule.simulate(6, 5)
    assert schedule.low_points(5, 30) == [10, 20, 30]
    assert [s for s in range(1, 30) if rates[s] > rates[s - 1]] == [10, 20]
    assert rates.min() >= 0.1 and rates[5] == pytest.approx(0.55)
    reference = _torch_rates(lambda o: torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(
        o, T_0=10, T_mult=1, eta_min=0.1), 30)
    np.testing.assert_allclose(rates, reference, atol=1e-12)


@pytest.mark.parametrize("mode, gamma", [("triangular", 1.0), ("triangular2", 1.0),
                                         ("exp_range", 0.99)])
def test_cyclical_lr_matches_torch(mode, gamma):
    schedule = CyclicalLR(base_fraction=0.1, step_size=8, mode=mode, gamma=gamma)
    rates = schedule.simulate(8, 8)
    reference = _torch_rates(lambda o: torch.optim.lr_scheduler.CyclicLR(
        o, base_lr=0.1, max_lr=1.0, step_size_up=8, mode=mode, gamma=gamma,
        cycle_momentum=False), 64)
    np.testing.assert_allclose(rates, reference, atol=1e-12)
    peak = 1.0 if mode != "exp_range" else 0.1 + 0.9 * 0.99 ** 8
    assert rates[0] == pytest.approx(0.1) and rates[8] == pytest.approx(peak)
    assert schedule.low_points(8, 64) == [16, 32, 48, 64]
    if mode == "triangular2":
        assert rates[24] == pytest.approx(0.1 + 0.9 / 2)


def test_cyclical_lr_default_step_size_is_four_epochs():
    assert CyclicalLR().low_points(10, 200) == [80, 160]


def test_one_cycle_start_peak_end_and_momentum_match_torch():
    total = 100
    schedule = OneCycle(pct_start=0.25, div_factor=25, final_div_factor=1e4)
    rates = schedule.simulate(10, 10)
    assert rates[0] == pytest.approx(1 / 25)
    assert rates.max() == pytest.approx(1.0) and int(np.argmax(rates)) in (24, 25)
    assert rates[-1] == pytest.approx(1 / 25 / 1e4)
    momenta = np.array([schedule.momentum(s, 10, total) for s in range(total)])
    assert momenta[0] == pytest.approx(0.95) and momenta.min() == pytest.approx(0.85, abs=1e-3)
    reference, reference_momenta = _torch_rates(lambda o: torch.optim.lr_scheduler.OneCycleLR(
        o, max_lr=1.0, total_steps=total, pct_start=0.25, div_factor=25, final_div_factor=1e4,
        base_momentum=0.85, max_momentum=0.95), total, momentum=True)
    np.testing.assert_allclose(rates, reference, atol=1e-12)
    np.testing.assert_allclose(momenta, reference_momenta, atol=1e-12)


def test_step_exponential_and_inverse_time_decay():
    per_epoch = 4
    step = StepDecay(every_epochs=2, gamma=0.5).simulate(6, per_epoch)
    assert list(step[::per_epoch]) == [1, 1, 0.5, 0.5, 0.25, 0.25]
    epoch_reference = _torch_rates(lambda o: torch.optim.lr_scheduler.StepLR(o, 2, 0.5), 6)
    np.testing.assert_allclose(step[::per_epoch], epoch_reference)
    exponential = ExponentialDecay(rate=0.3).simulate(5, per_epoch)
    np.testing.assert_allclose(exponential[::per_epoch], np.exp(-0.3 * np.arange(5)))
    reference = _torch_rates(lambda o: torch.optim.lr_scheduler.ExponentialLR(
        o, gamma=math.exp(-0.3)), 5)
    np.testing.assert_allclose(exponential[::per_epoch], reference, rtol=1e-12)
    inverse = InverseTimeDecay(rate=1.0).simulate(4, per_epoch)
    np.testing.assert_allclose(inverse[::per_epoch], [1, 1 / 2, 1 / 3, 1 / 4])
    assert inverse[2] == pytest.approx(1 / 1.5)
    assert Constant().simulate(2, 3).tolist() == [1.0] * 6


def test_slanted_triangular():
    rates = SlantedTriangular(cut_fraction=0.1, ratio=32).simulate(10, 10)
    assert rates[0] == pytest.approx(1 / 32)
    assert int(np.argmax(rates)) == 10 and rates[10] == pytest.approx(1.0)
    assert rates[-1] == pytest.approx((1 + (1 / 90) * 31) / 32)
    assert np.all(np.diff(rates[:11]) > 0) and np.all(np.diff(rates[10:]) < 0)


def test_cyclical_linear_fge_cycles():
    schedule = CyclicalLinear(cycle_epochs=2, low_fraction=0.01)
    rates = schedule.simulate(6, 5)   # cycles of 10 steps
    assert schedule.low_points(5, 30) == [5, 15, 25]
    assert rates[4] == pytest.approx(0.01)    # the 5th step of each cycle is the low point
    assert rates[14] == pytest.approx(0.01) and rates[9] == pytest.approx(1.0)
    assert rates.max() <= 1.0 and rates.min() >= 0.01


def test_phases_compose_schedules():
    schedule = Phases([(2, Constant()), (None, SGDR(cycle_len=1, cycle_mult=2))])
    rates = schedule.simulate(5, 4)    # 2 constant epochs, then SGDR cycles of 1 and 2 epochs
    assert list(rates[:8]) == [1.0] * 8
    assert rates[8] == 1.0 and rates[12] == 1.0 and rates[11] < 0.2
    assert schedule.low_points(4, 20) == [12, 20]
    with pytest.raises(ValueError, match="only the last phase"):
        Phases([(None, Constant()), (1, Constant())])


def test_named_schedules_and_errors():
    assert isinstance(get_schedule("sgdr", cycle_len=1, cycle_mult=2), SGDR)
    assert isinstance(get_schedule(None), Constant)
    with pytest.raises(ValueError, match="unknown schedule"):
        get_schedule("warp")
    with pytest.raises(ValueError, match="mode"):
        CyclicalLR(mode="zigzag")
    with pytest.raises(ValueError, match="cycle_mult"):
        SGDR(cycle_mult=0)


def test_schedule_plot_is_written(tmp_path):
    path = tmp_path / "sgdr.png"
    OneCycle().plot(5, 10, lr=1e-2, path=path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
