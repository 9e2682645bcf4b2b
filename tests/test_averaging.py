import pytest
import torch
from torch import nn

from tabembed.batches import TensorBatches
from tabembed.training.averaging import EMA, SWA, FastGeometricEnsemble, SnapshotEnsemble
from tabembed.training.callbacks import Callback
from tabembed.training.learner import Learner
from tabembed.training.schedules import SGDR, Constant, OneCycle


class TwoInputs(nn.Module):
    """A small model with the library's two-input signature, optionally with batch norm."""

    def __init__(self, batch_norm=False):
        super().__init__()
        self.embedding = nn.Embedding(5, 3)
        layers = [nn.Linear(3 + 4, 16), nn.ReLU()]
        if batch_norm:
            layers.append(nn.BatchNorm1d(16))
        self.body = nn.Sequential(*layers, nn.Linear(16, 1))

    def forward(self, codes, continuous):
        return self.body(torch.cat([self.embedding(codes[:, 0]), continuous], dim=1))


def _data(n=400, seed=0):
    generator = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, 5, (n, 1), generator=generator)
    continuous = torch.randn(n, 4, generator=generator)
    target = continuous.sum(1, keepdim=True) + codes.float() / 5
    return codes, continuous, target


def _learner(callbacks, batch_norm=False, double=True, shuffle=True, **options):
    torch.manual_seed(0)
    model = TwoInputs(batch_norm)
    codes, continuous, target = _data()
    if double:
        model, continuous, target = model.double(), continuous.double(), target.double()
    train = TensorBatches((codes, continuous, target), batch_size=50, shuffle=shuffle,
                          random_state=0)
    return Learner(model, nn.MSELoss(), train, callbacks=callbacks, random_state=0, **options)


class Recorder(Callback):
    """Copies of the weights after every step, and of the last model before averaging."""

    order = 20

    def __init__(self):
        self.after_step = []
        self.last_model = None

    def on_batch_end(self, learner):
        self.after_step.append({k: v.clone() for k, v in learner.model.state_dict().items()})


class LastModel(Callback):
    order = 0     # before the averaging callbacks replace the weights

    def on_fit_end(self, learner):
        self.state = {k: v.clone() for k, v in learner.model.state_dict().items()}


def _numel(states) -> int:
    return sum(t.numel() for state in states for t in state.values())


# ------------------------------------------------------------------ EMA

@pytest.mark.parametrize("warmup", [False, True])
def test_ema_update_matches_its_formula(warmup):
    ema, recorder = EMA(decay=0.9, warmup=warmup), Recorder()
    learner = _learner([ema, recorder])
    learner.fit(2, 1e-2)
    expected = None
    for n, state in enumerate(recorder.after_step):
        weights = {k: v for k, v in state.items()}
        if expected is None:
            expected = dict(weights)    # the first update copies the weights
            continue
        decay = min(0.9, (1 + n) / (10 + n)) if warmup else 0.9
        expected = {k: decay * expected[k] + (1 - decay) * weights[k] for k in weights}
    final = learner.model.state_dict()
    for name, value in expected.items():
        torch.testing.assert_close(final[name], value, rtol=0, atol=1e-12)
    assert ema.current_decay(0) == (0.1 if warmup else 0.9)


def test_ema_is_used_for_validation_and_keeps_one_copy():
    ema = EMA(decay=0.5, warmup=False)
    codes, continuous, target = _data(seed=1)
    learner = _learner([ema], valid_data=(codes, continuous.double(), target.double()))
    learner.fit(1, 1e-2)
    averaged = learner.model.state_dict()
    assert learner.history[-1]["valid_loss"] == pytest.approx(
        learner.validate()["valid_loss"], rel=1e-12)
    model_size = sum(t.numel() for t in averaged.values())
    held = sum(t.numel() for t in ema.averaged.module.state_dict().values())
    assert held == model_size      # one extra copy, nothing else
    assert ema._raw is None


# ------------------------------------------------------------------ SWA

def test_swa_cyclical_average_is_the_arithmetic_mean_of_collected_weights():
    swa, recorder = SWA(start=0, swa_lr=None), Recorder()
    learner = _learner([swa, recorder])
    learner.fit(7, 1e-2, schedule=SGDR(cycle_len=1, cycle_mult=2))
    per_epoch = learner.steps_per_epoch
    assert swa.collected_at == [per_epoch, 3 * per_epoch, 7 * per_epoch]
    collected = [recorder.after_step[step - 1] for step in swa.collected_at]
    final = learner.model.state_dict()
    for name in final:
        mean = sum(state[name] for state in collected) / len(collected)
        torch.testing.assert_close(final[name], mean, rtol=0, atol=1e-12)


def test_swa_constant_rate_averages_once_per_epoch_with_swalr():
    rates = []

    class Rates(Callback):
        order = 20

        def on_batch_end(self, learner):
            rates.append(learner.optimizer.param_groups[0]["lr"])

    swa = SWA(start=0.5, swa_lr=0.1, anneal_epochs=1)
    learner = _learner([swa, Rates()])
    learner.fit(6, 1e-2, schedule=OneCycle())
    per_epoch = learner.steps_per_epoch
    assert swa.collected_at == [4 * per_epoch, 5 * per_epoch, 6 * per_epoch]
    # After one annealing epoch SWALR holds the rate at 0.1 x base.
    assert rates[4 * per_epoch:] == pytest.approx([1e-3] * (2 * per_epoch))
    assert len(set(rates[:3 * per_epoch])) > 10      # the one-cycle schedule before


def test_swa_recomputes_batch_norm_statistics():
    swa, last = SWA(start=0, swa_lr=None), LastModel()
    learner = _learner([swa, last], batch_norm=True, shuffle=False)
    learner.fit(3, 1e-2, schedule=SGDR(cycle_len=1))
    final = learner.model.state_dict()
    name = "body.2.running_mean"
    assert not torch.allclose(final[name], last.state[name])
    # A manual pass: averaged weights, statistics reset, cumulative average over batches.
    manual = TwoInputs(batch_norm=True).double()
    manual.load_state_dict(swa.averaged.module.state_dict())
    norm = manual.body[2]
    norm.reset_running_stats()
    norm.momentum = None
    manual.train()
    with torch.no_grad():
        for codes, continuous, _ in learner.train_data:
            manual(codes, continuous)
    torch.testing.assert_close(final[name], norm.running_mean, rtol=0, atol=1e-12)
    torch.testing.assert_close(final["body.2.running_var"], norm.running_var, rtol=0, atol=1e-12)
    assert learner.model.body[2].momentum == 0.1    # restored after the pass
    held = sum(t.numel() for t in swa.averaged.module.state_dict().values())
    assert held == sum(t.numel() for t in final.values())


def test_swa_without_cycles_explains_itself():
    with pytest.raises(ValueError, match="cyclical schedule"):
        _learner([SWA(swa_lr=None)]).fit(2, 1e-2, schedule=Constant())


# ------------------------------------------------------------------ ensembles

def test_snapshots_follow_the_sgdr_cycles_and_ensemble_is_the_mean():
    snapshots = SnapshotEnsemble()
    learner = _learner([snapshots])
    learner.fit(7, 1e-2, schedule=SGDR(cycle_len=1, cycle_mult=2))
    per_epoch = learner.steps_per_epoch
    assert snapshots.collected_at == [per_epoch, 3 * per_epoch, 7 * per_epoch]
    codes, continuous, _ = _data(seed=2)
    inputs = (codes, continuous.double())
    ensemble = learner.predict(inputs)
    members = []
    for state in snapshots.snapshots:
        learner.model.load_state_dict(state)
        learner.predictor = None
        members.append(learner.predict(inputs))
    torch.testing.assert_close(ensemble, torch.stack(members).mean(0), rtol=0, atol=1e-12)
    assert not torch.allclose(members[0], members[-1])


def test_snapshot_keep_and_disk_storage(tmp_path):
    snapshots = SnapshotEnsemble(keep=2, directory=tmp_path)
    learner = _learner([snapshots])
    learner.fit(4, 1e-2, schedule=SGDR(cycle_len=1, cycle_mult=1))
    per_epoch = learner.steps_per_epoch
    assert snapshots.collected_at == [3 * per_epoch, 4 * per_epoch]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        f"snapshot-step{3 * per_epoch}.pt", f"snapshot-step{4 * per_epoch}.pt"]
    codes, continuous, _ = _data(seed=3)
    inputs = (codes, continuous.double())
    members = []
    for path in snapshots.snapshots:
        learner.model.load_state_dict(torch.load(path, weights_only=True))
        members.append(learner.predict_with_model(TensorBatches(inputs, has_target=False)))
    learner.predictor = snapshots
    torch.testing.assert_close(learner.predict(inputs), torch.stack(members).mean(0))


def test_fge_collects_at_each_cyclical_linear_low_point():
    rates = []

    class Rates(Callback):
        order = 20

        def on_batch_end(self, learner):
            rates.append(learner.optimizer.param_groups[0]["lr"])

    fge = FastGeometricEnsemble(cycle_epochs=2, n_cycles=2, peak_fraction=0.5, low_fraction=0.1)
    learner = _learner([fge, Rates()])
    learner.fit(6, 1e-2, schedule=OneCycle())
    per_epoch = learner.steps_per_epoch     # 8 steps; FGE owns the last 4 epochs
    start = 2 * per_epoch
    assert fge.collected_at == [start + per_epoch, start + 3 * per_epoch]
    assert rates[start + per_epoch - 1] == pytest.approx(0.1 * 0.5 * 1e-2)
    assert max(rates[start:]) <= 0.5 * 1e-2 + 1e-12
    assert len(fge.snapshots) == 2 and learner.predictor is fge


def test_ema_keeps_constant_buffers_finite():
    from tabembed.models import EntityEmbeddingMLP

    torch.manual_seed(0)
    model = EntityEmbeddingMLP(embedding_sizes=[(5, 3)], n_continuous=2,
                               continuous_bins=[[-1.0, 0.0, 1.0], [-2.0, 2.0]])
    codes, continuous, target = _data()
    learner = Learner(model, nn.MSELoss(), (codes, continuous[:, :2], target),
                      batch_size=50, callbacks=[EMA(decay=0.9)], random_state=0)
    learner.fit(2, 1e-2)
    for name, buffer in learner.model.named_buffers():
        assert torch.isfinite(buffer.float()).all(), name
    assert torch.isfinite(learner.predict((codes, continuous[:, :2]))).all()


# ------------------------------------------------------------------ one owner of the rate

@pytest.mark.parametrize("schedule", ["one_cycle", "sgdr", "constant", "cyclical",
                                      "slanted_triangular"])
@pytest.mark.parametrize("averaging", [None, "ema", "swa", "snapshot", "fge"])
def test_the_optimizer_sees_exactly_the_composed_schedule(averaging, schedule):
    from tabembed.defaults import MLP_DEFAULTS
    from tabembed.training.callbacks import compose_schedule
    from tabembed.training.config import TrainingConfig

    params = {**vars(MLP_DEFAULTS), "lr": 3e-3, "averaging": averaging, "schedule": schedule,
              "batch_size": 50, "early_stopping": False, "device": "cpu", "verbose": 0}
    if averaging == "snapshot" and schedule not in ("sgdr", "cyclical"):
        with pytest.raises(ValueError, match="cyclical schedule"):
            TrainingConfig.from_parameters(params, seed=0)
        return
    config = TrainingConfig.from_parameters(params, seed=0)
    callbacks = config.callbacks()
    seen = []

    class Rates(Callback):
        order = 50

        def on_batch_end(self, learner):
            seen.append([group["lr"] for group in learner.optimizer.param_groups])

    learner = _learner([*callbacks, Rates()], double=False)
    learner.fit(config.epochs, config.lr, schedule=config.schedule)
    preview = compose_schedule(config.schedule, callbacks).simulate(
        config.epochs, learner.steps_per_epoch, lr=config.lr)
    assert len(seen) == len(preview) == config.epochs * learner.steps_per_epoch
    for rates, expected in zip(seen, preview):
        assert rates == pytest.approx([expected] * len(rates), rel=1e-12)
    if averaging in ("swa", "fge") and schedule == "one_cycle":
        plain = config.schedule.simulate(config.epochs, learner.steps_per_epoch, lr=config.lr)
        assert not (preview == plain).all()     # the averaging method's part is in the preview
