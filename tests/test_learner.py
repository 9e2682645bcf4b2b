import os

import numpy as np
import pytest
import torch
from torch import nn

from tabembed.batches import TensorBatches
from tabembed.datasets import make_synthetic
from tabembed.models import EntityEmbeddingMLP, loss_for_task
from tabembed.preprocessing import TabularPreprocessor
from tabembed.training.callbacks import (
    Callback,
    Checkpoint,
    EarlyStopping,
    GradientClipping,
    GradualUnfreezing,
)
from tabembed.training.learner import Learner, TrainingDivergedError, split_learning_rates
from tabembed.training.lr_finder import suggest
from tabembed.training.schedules import SGDR, Constant, OneCycle


@pytest.fixture(scope="module")
def synthetic():
    X, y = make_synthetic(3000, cardinalities=(6, 20), n_continuous=2, noise=0.2, random_state=3)
    pre = TabularPreprocessor().fit(X)
    codes, continuous = pre.to_tensors(X)
    target = torch.tensor(y.to_numpy(), dtype=torch.float32)
    sizes = list(pre.embedding_sizes_.values())
    train = (codes[:2400], continuous[:2400], target[:2400])
    valid = (codes[2400:], continuous[2400:], target[2400:])
    return sizes, continuous.shape[1], train, valid


def _learner(synthetic, seed=0, dropout=0.1, **options):
    sizes, n_continuous, train, valid = synthetic
    torch.manual_seed(seed)
    model = EntityEmbeddingMLP(embedding_sizes=sizes, n_continuous=n_continuous,
                               hidden=(32, 16), dropout=dropout)
    options.setdefault("random_state", seed)
    return Learner(model, loss_for_task("regression"), train, valid, batch_size=128, **options)


def _states_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ------------------------------------------------------------------ batches

def test_tensor_batches_cover_every_row_and_avoid_single_row_batches():
    data = torch.arange(257)
    batches = TensorBatches([data], batch_size=64, shuffle=True, has_target=False,
                            random_state=0)
    assert len(batches) == 4     # 64*4 = 256 + 1: the lone row joins the last batch
    seen = torch.cat([b[0] for b in batches])
    assert sorted(seen.tolist()) == list(range(257))
    assert min(len(b[0]) for b in batches) > 1
    ordered = TensorBatches([data], batch_size=64, has_target=False)
    assert torch.equal(torch.cat([b[0] for b in ordered]), data)
    again = TensorBatches([data], batch_size=64, shuffle=True, has_target=False, random_state=0)
    assert torch.equal(torch.cat([b[0] for b in again]), seen)
    with pytest.raises(ValueError, match="differ in length"):
        TensorBatches([data, data[:3]])


# ------------------------------------------------------------------ fitting

def test_fit_learns_and_records_history(synthetic, tmp_path):
    learner = _learner(synthetic)
    learner.fit(6, 3e-3, schedule=OneCycle())
    frame = learner.history.to_frame()
    assert list(frame["epoch"]) == [1, 2, 3, 4, 5, 6]
    assert {"train_loss", "valid_loss", "lr", "time"} <= set(frame.columns)
    assert frame["valid_loss"].iloc[-1] < 0.5 * frame["valid_loss"].iloc[0]
    assert len(learner.history.batch_losses) == 6 * len(learner.train_data)
    learner.history.plot(tmp_path / "history.png")
    assert (tmp_path / "history.png").stat().st_size > 1000
    predictions = learner.predict(synthetic[3][:2])
    assert predictions.shape == (600, 1)


def test_same_random_state_gives_identical_histories(synthetic):
    histories = []
    for _ in range(2):
        learner = _learner(synthetic, seed=5)
        learner.fit(2, 1e-2, schedule=SGDR(cycle_len=1))
        histories.append([(r["train_loss"], r["valid_loss"]) for r in learner.history.records])
        histories[-1].append(learner.history.batch_losses)
    assert histories[0] == histories[1]


def test_verbose_zero_is_silent_and_one_prints_an_epoch_table(synthetic, capsys):
    _learner(synthetic).fit(1, 1e-3)
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""
    _learner(synthetic, verbose=1).fit(2, 1e-3, callbacks=[EarlyStopping(patience=1)])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["epoch", "train_loss", "valid_loss", "lr", "time"]
    assert lines[1].split()[0] == "1" and lines[1].endswith("s")     # seconds, with a unit
    assert len(lines) in (3, 4)         # header, two epochs, maybe a stop reason


def test_bfloat16_training_runs(synthetic):
    learner = _learner(synthetic, precision="bf16")
    learner.fit(2, 3e-3)
    assert np.isfinite(learner.history["valid_loss"]).all()


# ------------------------------------------------------------------ rates and freezing

def test_split_learning_rates():
    assert split_learning_rates(1e-3, 3) == [1e-3] * 3
    np.testing.assert_allclose(split_learning_rates(slice(1e-4, 1e-2), 3), [1e-4, 1e-3, 1e-2])
    assert split_learning_rates(slice(None, 1e-2), 3) == [1e-3, 1e-3, 1e-2]
    with pytest.raises(ValueError, match="2 rates"):
        split_learning_rates([1, 2], 3)


def test_discriminative_rates_reach_the_optimizer(synthetic):
    learner = _learner(synthetic)
    learner.fit(1, [1e-4, 1e-3, 1e-2], schedule=Constant())
    rates = {g["layer_group"]: g["lr"] for g in learner.optimizer.param_groups}
    assert rates == {0: 1e-4, 1: 1e-3, 2: 1e-2}
    learner.fit(1, slice(1e-5, 1e-3), schedule=OneCycle())
    bases = sorted({g["base_lr"] for g in learner.optimizer.param_groups})
    np.testing.assert_allclose(bases, [1e-5, 1e-4, 1e-3])
    # The schedule scales every group by the same factor: ratios are kept.
    final = {g["layer_group"]: g["lr"] for g in learner.optimizer.param_groups}
    assert final[2] / final[0] == pytest.approx(100)


def test_frozen_groups_and_their_batch_norm_do_not_change(synthetic):
    learner = _learner(synthetic, weight_decay=0.1)
    before = {k: v.clone() for k, v in learner.model.state_dict().items()}
    learner.freeze()
    learner.fit(2, 1e-2)
    after = learner.model.state_dict()
    for name, value in after.items():
        frozen = not name.startswith(("head", "output_range"))
        assert torch.equal(before[name], value) == frozen, name
    learner.unfreeze()
    learner.fit(1, 1e-2)
    assert not torch.equal(before["body.0.0.weight"], learner.model.state_dict()["body.0.0.weight"])


def test_gradual_unfreezing_unfreezes_one_group_per_epoch(synthetic):
    snapshots = []

    class Snapshot(Callback):
        order = 50

        def on_epoch_end(self, learner):
            snapshots.append({k: v.clone() for k, v in learner.model.state_dict().items()})

    learner = _learner(synthetic, dropout=0.0)
    initial = {k: v.clone() for k, v in learner.model.state_dict().items()}
    learner.fit(3, 1e-2, callbacks=[GradualUnfreezing(), Snapshot()])
    embedding, body, head = "embeddings.embeddings.0.weight", "body.0.0.weight", "head.weight"
    changed = [[not torch.equal(a[k], b[k]) for k in (embedding, body, head)]
               for a, b in zip([initial, *snapshots], snapshots)]
    assert changed == [[False, False, True], [False, True, True], [True, True, True]]


def test_gradual_unfreezing_sets_batch_norm_modes_in_the_epoch_it_unfreezes(synthetic):
    # The continuous inputs' batch norm is in the first layer group: it must use
    # running statistics while frozen and batch statistics from the epoch it thaws.
    modes = []

    class Probe(Callback):
        def on_batch_begin(self, learner):
            if learner.batch_index == 0:
                modes.append(learner.model.continuous_norm.training)

    learner = _learner(synthetic, dropout=0.0)
    assert isinstance(learner.model.continuous_norm, nn.BatchNorm1d)
    learner.fit(3, 1e-2, callbacks=[GradualUnfreezing(), Probe()])
    assert modes == [False, False, True]


# ------------------------------------------------------------------ callbacks

def test_gradient_clipping_bounds_the_norm(synthetic):
    norms = []

    class Probe(Callback):
        order = 5

        def on_after_backward(self, learner):
            grads = [p.grad.norm() for p in learner.model.parameters() if p.grad is not None]
            norms.append(torch.stack(grads).norm().item())

    _learner(synthetic).fit(1, 1e-2, callbacks=[GradientClipping(0.05), Probe()])
    assert max(norms) <= 0.05 + 1e-6


def test_nan_loss_stops_with_epoch_and_batch(synthetic):
    calls = {"n": 0}
    mse = loss_for_task("regression")

    def poisoned(output, target):
        calls["n"] += 1
        loss = mse(output, target)
        return loss * float("nan") if calls["n"] == 25 else loss

    sizes, n_continuous, train, _ = synthetic
    model = EntityEmbeddingMLP(embedding_sizes=sizes, n_continuous=n_continuous)
    learner = Learner(model, poisoned, train, batch_size=128)   # 19 batches an epoch
    with pytest.raises(TrainingDivergedError, match="nan at epoch 2, batch 6"):
        learner.fit(3, 1e-3)


def test_early_stopping_restores_the_best_epoch():
    scores = iter([3.0, 1.0, 2.0, 4.0, 5.0, 6.0])
    weights = []

    class Recorder(Callback):
        order = 5

        def on_epoch_end(self, learner):
            weights.append({k: v.clone() for k, v in learner.model.state_dict().items()})

    model = nn.Sequential(nn.Linear(3, 1))
    x, y = torch.randn(64, 3), torch.randn(64, 1)
    learner = Learner(model, nn.MSELoss(), (x, y), (x, y), batch_size=16,
                      metrics={"score": lambda o, t: next(scores)},
                      callbacks=[Recorder(), EarlyStopping("score", patience=2)])
    learner.fit(6, 1e-2)
    assert len(learner.history) == 4 and "score has not improved" in learner.stop_reason
    assert _states_equal(learner.model.state_dict(), weights[1])


def test_checkpoint_resume_matches_an_uninterrupted_run(synthetic, tmp_path):
    reference = _learner(synthetic, seed=11)
    reference.fit(4, 5e-3, schedule=OneCycle(),
                  callbacks=[EarlyStopping(patience=10)])

    class Interrupt(Callback):
        order = 100

        def on_epoch_end(self, learner):
            if learner.epoch == 1:
                raise KeyboardInterrupt

    path = tmp_path / "run.ckpt"
    interrupted = _learner(synthetic, seed=11)
    with pytest.raises(KeyboardInterrupt):
        interrupted.fit(4, 5e-3, schedule=OneCycle(),
                        callbacks=[EarlyStopping(patience=10), Checkpoint(path), Interrupt()])
    assert path.exists() and [p.name for p in tmp_path.iterdir()] == ["run.ckpt"]
    resumed = _learner(synthetic, seed=99)     # different init and seed: the checkpoint wins
    resumed.fit(4, 5e-3, schedule=OneCycle(),
                callbacks=[EarlyStopping(patience=10), Checkpoint(path)], resume_from=path)
    assert _states_equal(resumed.model.state_dict(), reference.model.state_dict())
    assert resumed.history.records[-1]["valid_loss"] == reference.history.records[-1]["valid_loss"]
    assert resumed.history.batch_losses == reference.history.batch_losses


def test_checkpoint_write_is_atomic(synthetic, tmp_path, monkeypatch):
    path = tmp_path / "model.ckpt"
    learner = _learner(synthetic)
    learner.fit(1, 1e-3, callbacks=[Checkpoint(path)])
    original = path.read_bytes()

    def broken_save(state, stream):
        stream.write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        learner.save_checkpoint(path)
    assert path.read_bytes() == original
    assert os.listdir(tmp_path) == ["model.ckpt"]


def test_a_damaged_checkpoint_is_a_clear_error_naming_the_file(synthetic, tmp_path):
    """Truncated at any point, empty, garbage, a FIFO: a ValueError naming the path (torch
    said ``OSError: [Errno 22]`` without it, or a bare ``EOFError``), never a hang."""
    path = tmp_path / "run.ckpt"
    _learner(synthetic).fit(1, 1e-3, callbacks=[Checkpoint(path)])
    content = path.read_bytes()
    damaged = {f"cut at {f}": content[:int(len(content) * f)]
               for f in (0.001, 0.01, 0.1, 0.5, 0.9, 0.999)}
    damaged.update({"empty": b"", "garbage": b"hello world" * 10})
    for name, raw in damaged.items():
        broken = tmp_path / "broken.ckpt"
        broken.write_bytes(raw)
        with pytest.raises(ValueError, match=r"broken\.ckpt") as info:
            _learner(synthetic).fit(2, 1e-3, resume_from=broken)
        assert "empty" in str(info.value) or "not a readable checkpoint" in str(info.value), name
    if hasattr(os, "mkfifo"):
        fifo = tmp_path / "fifo.ckpt"
        os.mkfifo(fifo)
        with pytest.raises(ValueError, match=r"fifo\.ckpt is a FIFO"):
            _learner(synthetic).fit(2, 1e-3, resume_from=fifo)


# ------------------------------------------------------------------ LR finder

def test_lr_finder_restores_state_bit_exactly(synthetic, tmp_path):
    learner = _learner(synthetic)
    learner.fit(1, 1e-3)      # so the optimizer has Adam moments to restore
    model_before = {k: v.clone() for k, v in learner.model.state_dict().items()}
    optimizer_before = learner.optimizer.state_dict()
    moments = {k: {n: t.clone() for n, t in v.items()}
               for k, v in optimizer_before["state"].items()}
    rng_before = torch.get_rng_state()
    result = learner.lr_find(num_steps=60)
    assert len(result.lrs) > 10 and result.lrs[0] == pytest.approx(1e-7)
    assert _states_equal(learner.model.state_dict(), model_before)
    after = learner.optimizer.state_dict()
    for key, state in moments.items():
        for name, tensor in state.items():
            assert torch.equal(after["state"][key][name], tensor)
    assert [g["lr"] for g in after["param_groups"]] == \
        [g["lr"] for g in optimizer_before["param_groups"]]
    assert torch.equal(torch.get_rng_state(), rng_before)
    assert len(learner.history.batch_losses) == len(learner.train_data)
    result.plot(tmp_path / "lr.png")
    assert (tmp_path / "lr.png").read_bytes()[:4] == b"\x89PNG"


class _Linear(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(8, 1)

    def forward(self, x):
        return self.linear(x).squeeze(1)


def test_lr_finder_suggests_within_10x_of_a_known_good_rate():
    # Plain SGD on least squares with unit-variance independent features: the
    # Hessian of the MSE is 2I, so 0.5 is the ideal rate and 1.0 diverges.
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(4096, 8, generator=generator)
    y = x @ torch.randn(8, generator=generator) + 0.1 * torch.randn(4096, generator=generator)
    torch.manual_seed(0)
    learner = Learner(_Linear(), nn.MSELoss(), (x, y), batch_size=64, random_state=0,
                      optimizer=lambda groups: torch.optim.SGD(groups, lr=0.1))
    result = learner.lr_find()
    known_good = 0.5
    for name in ("steepest", "minimum"):
        assert known_good / 10 <= result.suggestions[name] <= known_good * 10, result.suggestions
    # fastai's valley is deliberately cautious (here ~40x below the ideal rate),
    # but never past the point of divergence.
    assert known_good / 100 <= result.suggestions["valley"] < 1.0
    assert result.lrs[-1] < 10     # stopped early once the loss exploded


def test_minimum_floor_ignores_a_noisy_low_at_the_start_of_the_sweep():
    # A sweep whose loss never falls: its lowest point is noise at the smallest
    # rates. Unfloored, "minimum" suggests a tenth of that; floored, the lowest
    # point among rates >= 10 x floor (here at 1e-1, suggesting 1e-2).
    lrs = np.geomspace(1e-7, 10, 60)
    losses = np.full(60, 1.0)
    losses[8] = 0.9                       # noise, at ~7e-7
    losses[np.searchsorted(lrs, 1e-1)] = 0.95
    losses[-8:] = np.linspace(1.2, 4.0, 8)
    assert suggest(lrs, losses)["minimum"] == pytest.approx(lrs[8] / 10)
    floored = suggest(lrs, losses, minimum_floor=1e-3)["minimum"]
    assert floored == pytest.approx(lrs[np.searchsorted(lrs, 1e-1)] / 10)
    # A floor above the whole sweep leaves the suggestion as it was.
    assert suggest(lrs, losses, minimum_floor=100.0)["minimum"] == pytest.approx(lrs[8] / 10)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")
@pytest.mark.parametrize("precision", ["32", "bf16", "fp16"])
def test_training_on_cuda(synthetic, precision):
    learner = _learner(synthetic, device="cuda", precision=precision)
    assert learner.device.type == "cuda" and next(learner.model.parameters()).is_cuda
    learner.fit(3, 3e-3, schedule=OneCycle(), callbacks=[GradientClipping(1.0)])
    losses = learner.history["valid_loss"]
    assert losses[-1] < losses[0] and np.isfinite(losses).all()
    assert learner.predict(synthetic[3][:2]).device.type == "cpu"


def test_penalty_is_added_to_the_training_loss_only(synthetic):
    plain = _learner(synthetic)
    plain.fit(1, 1e-3)
    penalised = _learner(synthetic, penalty=lambda model, inputs: torch.tensor(5.0))
    penalised.fit(1, 1e-3)
    assert penalised.history[-1]["train_loss"] == pytest.approx(
        plain.history[-1]["train_loss"] + 5.0, rel=1e-6)
    # A constant penalty has no gradient: the same weights, and validation ignores it.
    assert penalised.history[-1]["valid_loss"] == pytest.approx(
        plain.history[-1]["valid_loss"], rel=1e-6)


def test_a_diverged_last_step_is_caught_from_the_weights():
    # One batch per epoch, one epoch: the loss is computed before the only step, so
    # only the weights can show that the step diverged.
    x = 1e3 * torch.randn(64, 4, generator=torch.Generator().manual_seed(0))
    y = x.sum(1, keepdim=True)
    learner = Learner(nn.Linear(4, 1), nn.MSELoss(), (x, y), batch_size=64,
                      optimizer=lambda groups: torch.optim.SGD(groups, lr=1.0))
    with pytest.raises(TrainingDivergedError, match="non-finite weights in 'weight'"):
        learner.fit(1, 1e36)


def test_stop_immediately_ends_the_epoch_after_the_current_batch(synthetic):
    class StopAtThree(Callback):
        def on_batch_end(self, learner):
            if learner.step == 3:
                learner.stop("enough", immediately=True)

    learner = _learner(synthetic)
    learner.fit(2, 1e-3, callbacks=[StopAtThree()])
    assert learner.step == 3 and learner.stop_reason == "enough"
    assert len(learner.history) == 0 and not learner.fitting


def test_lr_finder_runs_through_fit_and_none_of_the_learner_callbacks(synthetic):
    events = []

    class Spy(Callback):
        def on_batch_end(self, learner):
            events.append("batch")

    learner = _learner(synthetic, callbacks=[Spy(), EarlyStopping(patience=1)])
    result = learner.lr_find(num_steps=30)
    assert events == [] and len(result.lrs) == 30
    assert not learner.fitting and learner.history.batch_losses == []
    np.testing.assert_allclose(result.lrs, np.geomspace(1e-7, 10, 30), rtol=1e-9)
