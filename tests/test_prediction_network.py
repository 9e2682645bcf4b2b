"""The folded prediction network equals the model it was folded from."""

import copy
import math
import pickle

import pytest
import torch

from tabembed.models import EntityEmbeddingMLP
from tabembed.models import prediction_network as folding
from tabembed.models.prediction_network import prediction_mlp

SIZES = [(9, 5), (17, 9), (3, 2)]


def _model(**options):
    torch.manual_seed(0)
    kwargs = dict(embedding_sizes=SIZES, n_continuous=4, d_out=1, task="binary")
    kwargs.update(options)
    model = EntityEmbeddingMLP(**kwargs)
    # Non-trivial batch-norm statistics and affine parameters, as after training.
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm1d):
                module.running_mean.normal_()
                module.running_var.uniform_(0.5, 2.0)
                module.weight.normal_()
                module.bias.normal_()
    return model.eval()


def _inputs(model, n=300):
    generator = torch.Generator().manual_seed(1)
    sizes = [e.num_embeddings for e in model.embeddings.embeddings]
    codes = torch.stack([torch.randint(0, c, (n,), generator=generator) for c in sizes], 1) \
        if sizes else torch.zeros((n, 0), dtype=torch.int64)
    continuous = torch.randn(n, model.n_continuous, generator=generator) * 3
    return codes, continuous


def _unfolded(model, codes, continuous):
    return model.output_range(model.head(model.body(model.encode(codes, continuous))))


@pytest.mark.parametrize("options", [
    {},                                                   # plain batch-normed numbers
    {"continuous_embedding": "plr", "frequency_init_scale": 1.0},
    {"continuous_embedding": "plr_lite"},
    {"continuous_bins": [[-1.0, 0.0, 1.0]] * 4},
    {"continuous_batch_norm": False},
    {"hidden": (32, 16, 8), "dropout": 0.3, "embedding_dropout": 0.2},
    {"task": "multiclass", "d_out": 3},
    {"task": "regression", "y_range": (0.0, 5.0)},
    {"n_continuous": 0},
    {"embedding_sizes": [], "continuous_embedding": "plr"},
])
def test_folded_network_equals_the_model(options):
    model = _model(**options)
    codes, continuous = _inputs(model)
    assert prediction_mlp(model) is not None
    with torch.no_grad():
        expected = _unfolded(model, codes, continuous)
        got = model(codes, continuous)             # eval, no gradients: the folded path
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    one = model(codes[:1], continuous[:1]).detach()    # with gradients: the plain path
    torch.testing.assert_close(one, expected[:1], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("options", [
    {},
    {"continuous_embedding": "plr", "frequency_init_scale": 1.0},
    {"continuous_embedding": "plr", "frequency_init_scale": 1.0, "values": True},
    {"continuous_bins": [[-1.0, 0.0, 1.0]] * 4},
    {"task": "multiclass", "d_out": 3},
    {"n_members": 2},                                     # not folded: the plain network
])
def test_column_major_inputs_give_the_same_outputs(options):
    # Predictions pass the preprocessor's column-major arrays as they are (no copy).
    options = dict(options)
    values = options.pop("values", False)
    model = _model(**options)
    codes, continuous = _inputs(model, n=600)
    if values:       # value tables, and rows with values outside them
        given = continuous[:300].round(decimals=1)
        continuous = torch.cat([given, continuous[300:]])
        model.set_continuous_values([v.unique() for v in given.t()])
    codes_f, continuous_f = codes.t().contiguous().t(), continuous.t().contiguous().t()
    assert not codes_f.is_contiguous() and not continuous_f.is_contiguous()
    with torch.no_grad():
        expected = model(codes, continuous)
        got = model(codes_f, continuous_f)
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)
    if options.get("n_members", 1) == 1:
        assert model._folded() is not None      # the folded path was the one compared
        if values:
            assert model._folded().lookup is not None


def test_the_fold_follows_weight_updates_and_is_not_pickled():
    model = _model(continuous_embedding="plr", frequency_init_scale=1.0)
    codes, continuous = _inputs(model)
    with torch.inference_mode():
        before = model(codes, continuous)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    model.train()
    model(codes, continuous).sum().backward()      # also moves the batch-norm statistics
    optimizer.step()
    model.eval()
    with torch.inference_mode():
        after = model(codes, continuous)
        expected = _unfolded(model, codes, continuous)
    assert not torch.allclose(before, after)
    # The large step leaves outputs in the thousands: float32 rounding (of either
    # network, against float64) scales with them, so the tolerance does too.
    scale = 1e-5 * max(1.0, float(expected.abs().max()))
    torch.testing.assert_close(after, expected, rtol=1e-5, atol=scale)
    with torch.no_grad():
        model.head.bias.add_(1.0)                  # an in-place edit by hand, too
        torch.testing.assert_close(model(codes, continuous), expected + 1.0,
                                   rtol=1e-5, atol=scale)
    assert "_folded_cache" in model.__dict__
    for copied in (pickle.loads(pickle.dumps(model)), copy.deepcopy(model)):
        assert "_folded_cache" not in copied.__dict__
        with torch.no_grad():
            torch.testing.assert_close(copied(codes, continuous), expected + 1.0,
                                       rtol=1e-5, atol=scale)


def test_no_fold_for_members_or_huge_tables(monkeypatch):
    members = _model(n_members=3)
    assert prediction_mlp(members) is None
    codes, continuous = _inputs(members)
    with torch.no_grad():
        assert members(codes, continuous).shape == (300, 3, 1)
    monkeypatch.setattr(folding, "MAX_TABLE_VALUES", 100)
    model = _model()
    assert prediction_mlp(model) is None
    with torch.no_grad():
        torch.testing.assert_close(model(codes, continuous), _unfolded(model, codes, continuous))


@pytest.mark.parametrize("options", [
    {"continuous_embedding": "plr", "frequency_init_scale": 1.0},
    {"embedding_sizes": [], "continuous_embedding": "plr"},
])
@pytest.mark.parametrize("tabled", [[0, 2], [0, 1, 2, 3]])
def test_value_tables_equal_the_model_for_seen_and_unseen_values(options, tabled):
    """Inputs with training values get precomputed tables; values not in a table (and
    rows mixing both) are computed for their rows: the output is the model's."""
    model = _model(**options)
    codes, continuous = _inputs(model, n=600)
    generator = torch.Generator().manual_seed(2)
    values = [None] * model.n_continuous
    for j in tabled:
        points = torch.unique(torch.randint(-20, 20, (30,), generator=generator) / 4.0)
        values[j] = points
        known = points[torch.randint(0, len(points), (600,), generator=generator)]
        # Most rows take a training value, some a value between them, one a value far out.
        continuous[:, j] = torch.where(torch.rand(600, generator=generator) < 0.97, known,
                                       known + 0.1)
        continuous[7, j] = 1e3
    model.set_continuous_values(values)
    folded = prediction_mlp(model)
    assert folded.lookup is not None and folded.lookup.features == tabled
    _, _, missing = folded.lookup.locate(continuous)
    found = ~missing
    assert found.any() and not found.all()
    with torch.no_grad():
        expected = _unfolded(model, codes, continuous)
        torch.testing.assert_close(model(codes, continuous), expected, rtol=1e-5, atol=1e-5)
        # Passes below LOOKUP_MIN_ROWS compute every input, from the same fold.
        few = folding.LOOKUP_MIN_ROWS - 1
        torch.testing.assert_close(model(codes[:few], continuous[:few]), expected[:few],
                                   rtol=1e-5, atol=1e-5)
        # All rows found: the lookup alone.
        hits = found.all(dim=0).nonzero().squeeze(1)
        torch.testing.assert_close(model(codes[hits], continuous[hits]), expected[hits],
                                   rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="one entry per continuous input"):
        model.set_continuous_values(values[:1])


def test_value_tables_are_left_out_when_they_would_be_too_big(monkeypatch):
    model = _model(continuous_embedding="plr", frequency_init_scale=1.0)
    model.set_continuous_values([torch.arange(500.0), None, None, None])
    codes, continuous = _inputs(model)
    monkeypatch.setattr(folding, "MAX_TABLE_VALUES", 200 * 64)
    folded = prediction_mlp(model)
    assert folded is not None and folded.lookup is None
    with torch.no_grad():
        torch.testing.assert_close(model(codes, continuous), _unfolded(model, codes, continuous),
                                   rtol=1e-5, atol=1e-5)


def test_bucket_lookup_finds_exactly_the_training_values():
    """Each training value gets a bucket of its own (scaled floats, irregular gaps, a
    single value); queries equal to one find its row, anything else (between values,
    outside, inf, NaN) is not found. Values no bucketing separates are computed."""
    model = _model(continuous_embedding="plr", frequency_init_scale=1.0)
    generator = torch.Generator().manual_seed(3)
    irregular = torch.unique((2 * torch.randint(0, 50_000, (120,), generator=generator) - 1077.5)
                             / 7403.3)
    values = [irregular, torch.tensor([0.25]), torch.arange(17.0, 91.0) / 13.1,
              torch.tensor([0.0, 1e-9, 1e6])]     # last: 1e15 buckets needed
    model.set_continuous_values(values)
    lookup = prediction_mlp(model).lookup
    assert lookup.features == [0, 1, 2]
    for j, points in enumerate(values[:3]):
        n = len(points)
        queries = torch.zeros(n + 6, model.n_continuous)
        queries[:n, j] = points
        between = (points[:-1] + points[1:]) / 2 if n > 1 else points + 0.5
        queries[n:n + 2, j] = between[:2]
        queries[n + 2:, j] = torch.tensor([points[0] - 1, points[-1] + 1, math.inf, math.nan])
        _, rows, missing = lookup.locate(queries)
        found = ~missing
        assert found[j, :n].all() and not found[j, n:].any()
        starts = lookup.missing_rows[j] - n
        assert torch.equal(rows[j, :n], starts + torch.arange(n))
        assert (rows[j, n:] == lookup.missing_rows[j]).all()
    codes, continuous = _inputs(model)
    continuous[:100, 0] = irregular[:100]
    continuous[100:200, 2] = values[2][torch.arange(100) % 74]
    continuous[200:210, 3] = torch.tensor([0.0, 1e-9, 1e6] * 3 + [0.0])
    with torch.no_grad():
        torch.testing.assert_close(model(codes, continuous), _unfolded(model, codes, continuous),
                                   rtol=1e-5, atol=1e-5)


def test_bucket_tables_stop_at_their_total_budget(monkeypatch):
    """Wide tables: once the inputs' buckets would pass MAX_TOTAL_BUCKETS, the remaining
    inputs are computed, with the same output."""
    model = _model(continuous_embedding="plr", frequency_init_scale=1.0)
    model.set_continuous_values([torch.arange(0.0, 100.0, 2.0)] * model.n_continuous)
    monkeypatch.setattr(folding, "MAX_TOTAL_BUCKETS", 250)     # 99 buckets an input
    lookup = prediction_mlp(model).lookup
    assert lookup.features == [0, 1] and lookup.dense == [2, 3]
    assert lookup.rows.numel() == 198
    codes, continuous = _inputs(model)
    continuous[:, :3] = torch.arange(0.0, 100.0, 2.0).repeat(6)[:300, None]
    with torch.no_grad():
        torch.testing.assert_close(model(codes, continuous), _unfolded(model, codes, continuous),
                                   rtol=1e-5, atol=1e-5)


def test_mixed_precision_predictions_use_the_plain_network():
    """Under autocast (a Learner with precision="bf16" predicting) the folded network,
    whose in-place products autocast's casts do not reach, steps aside."""
    model = _model(continuous_embedding="plr", frequency_init_scale=1.0)
    model.set_continuous_values([torch.arange(-2.0, 2.0, 0.25), None, None, None])
    codes, continuous = _inputs(model)
    with torch.no_grad():
        expected = _unfolded(model, codes, continuous)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            output = model(codes, continuous)
    assert output.dtype == torch.bfloat16
    torch.testing.assert_close(output.float(), expected, rtol=0.05, atol=0.05)
