import math

import numpy as np
import pytest
import torch
from torch import nn

from tabembed.datasets import make_synthetic
from tabembed.models import (
    DotBias,
    EntityEmbeddingMLP,
    NeuralCF,
    loss_for_task,
    predictions_from_output,
)
from tabembed.models.layers import EMBEDDING_INIT_STD
from tabembed.preprocessing import TabularPreprocessor
from tabembed.training.parameter_groups import layer_groups, parameter_groups

SIZES = [(9, 5), (17, 9), (3, 2)]


def _inputs(n=32, sizes=SIZES, n_continuous=4, seed=0):
    generator = torch.Generator().manual_seed(seed)
    codes = torch.stack([torch.randint(0, c, (n,), generator=generator) for c, _ in sizes], 1) \
        if sizes else torch.zeros((n, 0), dtype=torch.int64)
    return codes, torch.randn(n, n_continuous, generator=generator)


# ------------------------------------------------------------------ MLP

@pytest.mark.parametrize("task, d_out, shape", [
    ("regression", 1, (32, 1)), ("regression", 3, (32, 3)), ("binary", 1, (32, 1)),
    ("multiclass", 5, (32, 5)), ("multilabel", 4, (32, 4)),
])
def test_mlp_output_shapes_and_predictions(task, d_out, shape):
    model = EntityEmbeddingMLP(embedding_sizes=SIZES, n_continuous=4, d_out=d_out, task=task)
    output = model(*_inputs())
    assert output.shape == shape
    probabilities = predictions_from_output(output, task)
    if task == "multiclass":
        torch.testing.assert_close(probabilities.sum(1), torch.ones(32))
    if task == "multilabel":
        assert ((probabilities > 0) & (probabilities < 1)).all()
        assert not torch.allclose(probabilities.sum(1), torch.ones(32))
    target = {"regression": torch.randn(32, d_out).squeeze(1), "binary": torch.rand(32).round(),
              "multiclass": torch.randint(0, d_out, (32,)),
              "multilabel": torch.rand(32, d_out).round()}[task]
    loss = loss_for_task(task)(output, target)
    assert loss.ndim == 0 and torch.isfinite(loss)


def test_mlp_without_categorical_or_without_continuous():
    only_continuous = EntityEmbeddingMLP(embedding_sizes=[], n_continuous=3)
    assert only_continuous(*_inputs(sizes=[], n_continuous=3)).shape == (32, 1)
    only_codes = EntityEmbeddingMLP(embedding_sizes=SIZES, n_continuous=0)
    assert only_codes(*_inputs(n_continuous=0)).shape == (32, 1)
    with pytest.raises(ValueError, match="at least one"):
        EntityEmbeddingMLP(embedding_sizes=[], n_continuous=0)


def test_y_range_is_always_respected():
    model = EntityEmbeddingMLP(embedding_sizes=SIZES, n_continuous=4, y_range=(1.0, 5.0))
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.mul_(50)   # drive the pre-activation far outside
    codes, continuous = _inputs(n=512)
    output = model(codes, continuous * 100)
    assert output.min() >= 1.0 and output.max() <= 5.0
    assert output.max() - output.min() > 1.0   # saturates at both ends, not a constant
    with pytest.raises(ValueError, match="y_range"):
        EntityEmbeddingMLP(embedding_sizes=SIZES, n_continuous=4, task="binary", y_range=(0, 1))


def test_mlp_gradients_reach_every_parameter():
    model = EntityEmbeddingMLP(embedding_sizes=SIZES, n_continuous=4, d_out=2, task="multiclass")
    codes, continuous = _inputs(n=256)
    loss_for_task("multiclass")(model(codes, continuous), torch.randint(0, 2, (256,))).backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_mlp_parameter_count_matches_formula():
    model = EntityEmbeddingMLP(embedding_sizes=SIZES, n_continuous=4, d_out=3, task="multiclass",
                               hidden=(200, 100))
    embeddings = sum(c * w for c, w in SIZES)
    d_in = sum(w for _, w in SIZES) + 4
    continuous_norm = 2 * 4
    # Linear without bias when batch norm follows (as fastai), + BN weight and bias.
    hidden = d_in * 200 + 2 * 200 + 200 * 100 + 2 * 100
    head = 100 * 3 + 3
    expected = embeddings + continuous_norm + hidden + head
    assert sum(p.numel() for p in model.parameters()) == expected


def test_initialisation():
    torch.manual_seed(0)
    model = EntityEmbeddingMLP(embedding_sizes=[(5000, 50)], n_continuous=10,
                               hidden=(400,), dropout=0.0)
    table = model.embeddings.embeddings[0].weight
    assert abs(table.std().item() - EMBEDDING_INIT_STD) < 0.001
    linear = model.body[0][0]
    expected = math.sqrt(2 / linear.in_features)   # Kaiming normal, fan-in, ReLU
    assert abs(linear.weight.std().item() - expected) / expected < 0.05
    assert (model.head.bias == 0).all()


def test_same_seed_same_model_and_outputs():
    outputs = []
    for _ in range(2):
        torch.manual_seed(7)
        model = EntityEmbeddingMLP(embedding_sizes=SIZES, n_continuous=4)
        model.train()
        torch.manual_seed(8)
        outputs.append(model(*_inputs()))
    torch.testing.assert_close(outputs[0], outputs[1], rtol=0, atol=0)


def test_layer_groups_cover_every_parameter_once():
    for model in (EntityEmbeddingMLP(embedding_sizes=SIZES, n_continuous=4),
                  DotBias(n_users=5, n_items=6, side_embedding_sizes=[(3, 2)], n_continuous=2),
                  NeuralCF(n_users=5, n_items=6, side_embedding_sizes=[(3, 2)], n_continuous=2)):
        grouped = [id(p) for g in layer_groups(model) for p in g.parameters()]
        assert sorted(grouped) == sorted(id(p) for p in model.parameters())
        assert len(set(grouped)) == len(grouped)


def test_parameter_groups_skip_decay_on_biases_norms_and_optionally_embeddings():
    model = EntityEmbeddingMLP(embedding_sizes=SIZES, n_continuous=4)
    groups = parameter_groups(model, lr=[1e-4, 1e-3, 1e-2], weight_decay=0.1,
                              decay_embeddings=False)
    decayed = {id(p) for g in groups if g["weight_decay"] > 0 for p in g["params"]}
    for module in model.modules():
        for parameter in module.parameters(recurse=False):
            plain = isinstance(module, nn.BatchNorm1d | nn.Embedding) or parameter.ndim == 1
            assert (id(parameter) in decayed) != plain, module
    assert {g["lr"] for g in groups} == {1e-4, 1e-3, 1e-2}
    with pytest.raises(ValueError, match="3 layer groups"):
        parameter_groups(model, lr=[1e-3, 1e-2])


def test_mlp_recovers_a_known_signal_with_a_bare_loop():
    X, y = make_synthetic(12000, cardinalities=(8, 40), n_continuous=2, noise=0.1,
                          missing_fraction=0.0, random_state=1)
    pre = TabularPreprocessor().fit(X[:10000])
    codes, continuous = pre.to_tensors(X)
    target = torch.tensor(y.to_numpy(), dtype=torch.float32)
    torch.manual_seed(0)
    model = EntityEmbeddingMLP(embedding_sizes=list(pre.embedding_sizes_.values()),
                               n_continuous=2, hidden=(64, 32), dropout=0.0)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    loss_function = loss_for_task("regression")
    generator = torch.Generator().manual_seed(0)
    for _ in range(400):
        rows = torch.randint(0, 10000, (256,), generator=generator)
        optimizer.zero_grad()
        loss_function(model(codes[rows], continuous[rows]), target[rows]).backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        predicted = model(codes[10000:], continuous[10000:]).squeeze(1)
    held_out = target[10000:]
    r2 = 1 - ((predicted - held_out) ** 2).mean() / held_out.var()
    # Continuous terms alone explain about half the variance; categories the rest.
    assert r2 > 0.95, r2


# ------------------------------------------------------------ collaborative

def _planted_ratings(n_users=300, n_items=200, rank=3, density=0.25, seed=0):
    rng = np.random.default_rng(seed)
    users = rng.normal(0, 0.8, (n_users, rank))
    items = rng.normal(0, 0.8, (n_items, rank))
    user_bias, item_bias = rng.normal(0, 0.5, n_users), rng.normal(0, 0.5, n_items)
    pairs = np.argwhere(rng.random((n_users, n_items)) < density)
    u, i = pairs[:, 0], pairs[:, 1]
    truth = 3.0 + user_bias[u] + item_bias[i] + (users[u] * items[i]).sum(1)
    rating = truth + rng.normal(0, 0.1, len(u))
    codes = torch.tensor(np.c_[u + 1, i + 1])   # 0 is the unknown token
    return codes, torch.tensor(rating, dtype=torch.float32), n_users + 1, n_items + 1


def test_dot_bias_recovers_planted_factors_with_a_bare_loop():
    codes, rating, n_users, n_items = _planted_ratings()
    order = torch.randperm(len(rating), generator=torch.Generator().manual_seed(0))
    train, held_out = order[:12000], order[12000:]
    torch.manual_seed(0)
    model = DotBias(n_users=n_users, n_items=n_items, n_factors=8, global_bias=3.0)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-2)
    empty = torch.zeros(len(rating), 0)
    for _ in range(300):
        optimizer.zero_grad()
        prediction = model(codes[train], empty[train]).squeeze(1)
        ((prediction - rating[train]) ** 2).mean().backward()
        optimizer.step()
    with torch.no_grad():
        prediction = model(codes[held_out], empty[held_out]).squeeze(1)
    rmse = ((prediction - rating[held_out]) ** 2).mean().sqrt()
    spread = rating[held_out].std()
    # A bias-only model cannot go below ~0.95 of the spread; a broken dot product neither.
    assert rmse < 0.3 * spread, (rmse, spread)


@pytest.mark.parametrize("cls", [DotBias, NeuralCF])
def test_unknown_user_or_item_gives_the_prior(cls):
    model = cls(n_users=10, n_items=20, y_range=(0.0, 5.5), global_bias=3.5)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter))   # a "trained", non-trivial model
        model.user_factors.weight[0] = 0   # padding rows are never trained
        model.item_factors.weight[0] = 0
        model.user_bias.weight[0] = 0
        model.item_bias.weight[0] = 0
    model.eval()
    codes = torch.tensor([[0, 0], [0, 7], [4, 0], [4, 7]])
    output = model(codes, torch.zeros(4, 0)).squeeze(1)
    offset = model.offset.bias
    squash = model.output_range
    with torch.no_grad():
        torch.testing.assert_close(output[0], squash(offset))
        torch.testing.assert_close(output[1], squash(offset + model.item_bias.weight[7, 0]))
        torch.testing.assert_close(output[2], squash(offset + model.user_bias.weight[4, 0]))


@pytest.mark.parametrize("cls", [DotBias, NeuralCF])
def test_collaborative_gradients_and_padding(cls):
    model = cls(n_users=10, n_items=20, side_embedding_sizes=[(4, 2)], n_continuous=2)
    codes = torch.stack([torch.randint(0, 10, (64,)), torch.randint(0, 20, (64,)),
                         torch.randint(0, 4, (64,))], 1)
    model(codes, torch.randn(64, 2)).pow(2).mean().backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None, name
    assert (model.user_factors.weight.grad[0] == 0).all()
    assert (model.user_bias.weight.grad[0] == 0).all()


def test_dot_bias_parameter_count_and_fresh_prior():
    model = DotBias(n_users=11, n_items=21, n_factors=50, y_range=(0, 5.5), global_bias=3.5)
    assert sum(p.numel() for p in model.parameters()) == 11 * 50 + 21 * 50 + 11 + 21 + 1
    output = model(torch.tensor([[0, 0]]), torch.zeros(1, 0))
    assert output.item() == pytest.approx(3.5, abs=1e-3)   # offset starts at the given mean


# ------------------------------------------------------------ precision, devices

def _all_models():
    return [
        (EntityEmbeddingMLP(embedding_sizes=SIZES, n_continuous=4), _inputs()),
        (DotBias(n_users=9, n_items=17), (_inputs(sizes=[(9, 1), (17, 1)], n_continuous=0))),
        (NeuralCF(n_users=9, n_items=17), (_inputs(sizes=[(9, 1), (17, 1)], n_continuous=0))),
    ]


@pytest.mark.parametrize("index", [0, 1, 2])
def test_bfloat16_autocast_matches_float32(index):
    model, inputs = _all_models()[index]
    model.eval()
    reference = model(*inputs)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = model(*inputs)
    assert low.dtype in (torch.bfloat16, torch.float32)
    torch.testing.assert_close(low.float(), reference, atol=0.05, rtol=0.05)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")
@pytest.mark.parametrize("index", [0, 1, 2])
def test_models_run_on_cuda(index):
    model, inputs = _all_models()[index]
    model.eval()
    reference = model(*inputs)
    gpu = model.to("cuda")(*(t.to("cuda") for t in inputs))
    torch.testing.assert_close(gpu.cpu(), reference, atol=1e-4, rtol=1e-4)


def test_piecewise_linear_encoding_formula():
    from tabembed.models.layers import PiecewiseLinearEncoding

    encoding = PiecewiseLinearEncoding([[0.0, 1.0, 3.0], [-1.0, 1.0]])
    x = torch.tensor([[0.5, 0.0], [2.0, 3.0], [-1.0, -3.0], [5.0, 0.5]])
    # Feature 0 has 2 bins; feature 1 one bin (then a zero pad slot).
    expected = torch.tensor([
        [0.5, 0.0, 0.5, 0.0],
        [1.0, 0.5, 1.0, 0.0],      # above feature 1's range: saturated at 1
        [0.0, 0.0, 0.0, 0.0],      # below the range: all zero
        [1.0, 1.0, 0.75, 0.0],
    ])
    torch.testing.assert_close(encoding(x), expected)
    assert encoding.d_out == 4
    with pytest.raises(ValueError, match="increasing"):
        PiecewiseLinearEncoding([[1.0, 1.0]])


def test_mlp_with_piecewise_linear_inputs_learns_and_has_gradients():
    X, y = make_synthetic(4000, cardinalities=(5,), n_continuous=2, noise=0.1,
                          missing_fraction=0.0, random_state=4)
    y = y + 2 * np.sign(X["num_0"].to_numpy())      # a step a plain linear term cannot fit
    pre = TabularPreprocessor().fit(X)
    edges = pre.bin_edges(16)
    assert len(edges) == 2 and all(np.all(np.diff(e) > 0) for e in edges)
    codes, continuous = pre.to_tensors(X)
    target = torch.tensor(y.to_numpy(), dtype=torch.float32)
    torch.manual_seed(0)
    model = EntityEmbeddingMLP(embedding_sizes=list(pre.embedding_sizes_.values()),
                               n_continuous=2, hidden=(32,), dropout=0.0, continuous_bins=edges)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(300):
        rows = torch.randint(0, 3000, (256,))
        optimizer.zero_grad()
        loss_for_task("regression")(model(codes[rows], continuous[rows]), target[rows]).backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        predicted = model(codes[3000:], continuous[3000:]).squeeze(1)
    r2 = 1 - ((predicted - target[3000:]) ** 2).mean() / target[3000:].var()
    assert r2 > 0.9, r2


def test_embedding_penalty_formula_and_unknown_rows():
    model = DotBias(n_users=6, n_items=7, n_factors=3)
    with torch.no_grad():
        for table in (model.user_factors, model.item_factors, model.user_bias, model.item_bias):
            table.weight.normal_()
            table.weight[0] = 0
    codes = torch.tensor([[1, 2], [0, 3], [4, 0]])
    expected = torch.stack([
        model.user_factors.weight[u].pow(2).sum() + model.item_factors.weight[i].pow(2).sum()
        + model.user_bias.weight[u, 0] ** 2 + model.item_bias.weight[i, 0] ** 2
        for u, i in codes.tolist()]).mean()
    torch.testing.assert_close(model.embedding_penalty(codes), expected)


def test_dropout_drops_at_rate_p_and_keeps_the_expectation():
    from tabembed.models.layers import Dropout, _mask_bits

    torch.manual_seed(0)
    layer = Dropout(0.1)
    ones = torch.ones(2000, 500, requires_grad=True)
    out = layer(ones)
    dropped = (out == 0).float()
    assert abs(dropped.mean().item() - 0.1) < 0.002
    # Every 16-bit lane of the 64-bit draws is used, none biased.
    lanes = dropped.reshape(-1, 4).mean(0)
    assert (lanes - 0.1).abs().max().item() < 0.003
    assert abs(out.mean().item() - 1.0) < 0.01
    out.sum().backward()      # the gradient is the mask times the scale
    torch.testing.assert_close(ones.grad, out.detach())
    # The mask is exactly the comparison of the 16-bit lanes of its random words.
    torch.manual_seed(1)
    mask = layer.mask((3, 7), torch.float32)
    torch.manual_seed(1)
    lanes = torch.from_numpy(_mask_bits(6).view(np.int16)[:21].copy()).view(3, 7)
    torch.testing.assert_close(mask, (lanes >= layer.threshold).float() * layer.scale,
                               rtol=0, atol=0)
    # torch's generator governs the masks: its seed, and its saved state (checkpoints).
    torch.manual_seed(1)
    first = layer.mask((30, 70), torch.float32)
    state = torch.get_rng_state()
    second = layer.mask((30, 70), torch.float32)
    assert not torch.equal(first, second)
    torch.set_rng_state(state)
    torch.testing.assert_close(layer.mask((30, 70), torch.float32), second, rtol=0, atol=0)
    torch.manual_seed(1)
    torch.testing.assert_close(layer.mask((30, 70), torch.float32), first, rtol=0, atol=0)
    assert layer.mask((30, 70), torch.bfloat16).dtype == torch.bfloat16
    layer.eval()
    assert layer(ones) is ones
    assert Dropout(0.0).train()(ones) is ones
    with pytest.raises(ValueError, match="dropout must be in"):
        Dropout(1.0)


def test_dot_bias_penalty_reuses_the_forward_rows_with_the_same_value_and_gradients():
    from tabembed.models import DotBias

    torch.manual_seed(0)
    model = DotBias(n_users=20, n_items=30, n_factors=8, y_range=(0.0, 5.5)).train()
    codes = torch.stack([torch.randint(0, 20, (64,)), torch.randint(0, 30, (64,))], 1)
    continuous = torch.zeros(64, 0)

    def gradients(reuse: bool):
        model.zero_grad()
        output = model(codes, continuous)
        # A different tensor with the same values never matches the kept rows.
        penalty = model.embedding_penalty(codes if reuse else codes.clone())
        (output.sum() + 0.05 * penalty).backward()
        return penalty.detach(), [p.grad.clone() for p in model.parameters()]

    fresh_penalty, fresh = gradients(reuse=False)
    kept_penalty, kept = gradients(reuse=True)
    torch.testing.assert_close(kept_penalty, fresh_penalty)
    for got, want in zip(kept, fresh):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)
    assert "_batch_penalty" not in model.__dict__          # used once
    with torch.no_grad():
        model(codes, continuous)
    assert "_batch_penalty" not in model.__dict__          # kept only when training


def test_one_hot_embedding_lookup_equals_the_per_column_lookups():
    from tabembed.models.layers import CategoricalEmbeddings

    torch.manual_seed(0)
    sizes = [(9, 5), (17, 9), (8, 4), (3, 2)]
    layer = CategoricalEmbeddings(sizes)
    assert layer.one_hot
    codes = torch.stack([torch.randint(0, c, (200,)) for c, _ in sizes], 1)
    weights = torch.randn(200, layer.d_out)
    fast = layer(codes)                                  # gradients on: the one-hot path
    (fast * weights).sum().backward()
    fast_grads = [e.weight.grad.clone() for e in layer.embeddings]
    layer.zero_grad()
    plain = torch.cat([e(codes[:, i]) for i, e in enumerate(layer.embeddings)], dim=1)
    (plain * weights).sum().backward()
    torch.testing.assert_close(fast, plain, rtol=0, atol=0)
    for got, embedding in zip(fast_grads, layer.embeddings):
        torch.testing.assert_close(got, embedding.weight.grad, rtol=1e-5, atol=1e-6)
    # A code outside its column's table is an error, never another column's row.
    bad = codes.clone()
    bad[3, 0] = 9
    with pytest.raises(IndexError):
        layer(bad)
    assert not CategoricalEmbeddings([(300, 50), (200, 50), (10, 5)]).one_hot


@pytest.fixture(params=["native", "torch"])
def dot_bias_path(request, monkeypatch):
    """Runs a test with dot_bias_terms's C kernel and with its PyTorch path."""
    from tabembed.native import dot_bias as native_dot_bias

    if request.param == "torch":
        monkeypatch.setattr(native_dot_bias, "library", lambda: None)
    elif native_dot_bias.library() is None:
        from tabembed.native import reason

        # Only a machine without a C compiler (or a run with the kernel turned off) may
        # lack the kernel; anywhere else it is a failure, not a skip.
        if not any(why in reason("dot_bias") for why in ("no C compiler", "TABEMBED_NATIVE=0")):
            pytest.fail(f"the dot-bias kernel did not build: {reason('dot_bias')}")
        pytest.skip(reason("dot_bias"))
    return request.param


@pytest.mark.parametrize("unknown", [True, False])
@pytest.mark.parametrize("frozen", [None, "user_factors", "item_bias"])
def test_dot_bias_terms_equal_the_plain_modules_values_and_gradients(frozen, unknown,
                                                                     dot_bias_path):
    """The hand-written backward (C kernel or PyTorch) against autograd through the four
    embeddings: duplicated codes, the unknown code 0 (its padding row never learns) in the
    batch or not, a frozen table."""
    from tabembed.models import DotBias
    from tabembed.models.dot_bias_terms import dot_bias_terms

    torch.manual_seed(0)
    model = DotBias(n_users=12, n_items=15, n_factors=6)
    with torch.no_grad():
        for table in (model.user_bias, model.item_bias):
            table.weight.normal_()
    tables = (model.user_factors, model.item_factors, model.user_bias, model.item_bias)
    if frozen:
        getattr(model, frozen).weight.requires_grad_(False)
    users = torch.tensor([0, 3, 3, 11, 5, 0, 7, 3])
    items = torch.tensor([2, 0, 14, 2, 2, 9, 0, 1])
    if not unknown:
        users, items = users.clamp(min=1), items.clamp(min=1)
    upstream = torch.randn(8, 1)

    def run(fused: bool):
        for table in tables:
            table.weight.grad = None
        if fused:
            terms, penalty = dot_bias_terms(*tables, users, items)
        else:
            rows = (model.user_factors(users), model.item_factors(items),
                    model.user_bias(users), model.item_bias(items))
            terms = (rows[0] * rows[1]).sum(1, keepdim=True) + rows[2] + rows[3]
            penalty = sum(r.pow(2).sum(1) for r in rows).mean()
        ((terms * upstream).sum() + 0.3 * penalty).backward()
        return terms.detach(), penalty.detach(), [t.weight.grad for t in tables]

    got, want = run(fused=True), run(fused=False)
    kind = type(dot_bias_terms(*tables, users, items)[0].grad_fn).__name__
    assert kind.startswith("_NativeDotBiasTerms" if dot_bias_path == "native" else "_DotBias")
    torch.testing.assert_close(got[0], want[0])
    torch.testing.assert_close(got[1], want[1])
    for table, fused_grad, plain_grad in zip(tables, got[2], want[2], strict=True):
        if not table.weight.requires_grad:
            assert fused_grad is None and plain_grad is None
            continue
        torch.testing.assert_close(fused_grad, plain_grad, rtol=1e-5, atol=1e-6)
        assert fused_grad[0].abs().sum() == 0          # the unknown code's row
    # Only the terms used (no penalty): the penalty's zero gradient adds nothing.
    for table in tables:
        table.weight.grad = None
    terms, _ = dot_bias_terms(*tables, users, items)
    terms.sum().backward()
    assert model.item_factors.weight.grad[2].abs().sum() > 0
    # A code outside its table is an error naming it, never another row's memory.
    with pytest.raises(IndexError, match="15" if dot_bias_path == "native" else "range"):
        dot_bias_terms(*tables, users, items.clone().fill_(15))
    # The kernel's backward reads the table again: one changed in place between forward
    # and backward is autograd's error, not gradients of other values. (The PyTorch path
    # keeps copies of the batch's rows.)
    if dot_bias_path == "native" and not frozen:
        terms, penalty = dot_bias_terms(*tables, users, items)
        with torch.no_grad():
            model.user_factors.weight.add_(1.0)
        with pytest.raises(RuntimeError, match="modified by an inplace operation"):
            (terms.sum() + penalty).backward()


@pytest.mark.parametrize("y_range", [(0.0, 5.5), None])
def test_dot_bias_training_output_in_one_node_equals_the_module_path(y_range, dot_bias_path):
    """In training, DotBias computes its whole output (terms, global offset, y_range's
    sigmoid) in one autograd function: the same outputs, penalty and gradients (offset
    included) as the modules' path, which the model still takes with side features."""
    from torch import nn

    from tabembed.models import DotBias
    from tabembed.models.collab import _Collaborative

    torch.manual_seed(0)
    model = DotBias(n_users=12, n_items=15, n_factors=6, y_range=y_range, global_bias=3.0)
    with torch.no_grad():
        for table in (model.user_bias, model.item_bias):
            table.weight.normal_()
    model.train()
    codes = torch.tensor([[0, 2], [3, 0], [3, 14], [11, 2], [5, 2], [7, 9]])
    continuous = torch.zeros(6, 0)
    upstream = torch.randn(6, 1)

    def run(forward):
        model.zero_grad(set_to_none=True)
        output = forward(model, codes, continuous)
        penalty = model.embedding_penalty(codes)
        ((output * upstream).sum() + 0.3 * penalty).backward()
        return output.detach(), penalty.detach(), {
            name: weight.grad.clone() for name, weight in model.named_parameters()}

    fused, modules = run(DotBias.forward), run(_Collaborative.forward)
    torch.testing.assert_close(fused[0], modules[0])
    torch.testing.assert_close(fused[1], modules[1])
    assert fused[2].keys() == modules[2].keys() and "offset.bias" in fused[2]
    for name, grad in fused[2].items():
        torch.testing.assert_close(grad, modules[2][name], rtol=1e-5, atol=1e-6)
    assert isinstance(model.output_range, nn.Identity) == (y_range is None)
    if y_range is not None:
        assert (fused[0] > y_range[0]).all() and (fused[0] < y_range[1]).all()
