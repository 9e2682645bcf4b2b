import pytest
import torch
from torch import nn

from tabembed.models import EntityEmbeddingMLP, loss_for_task, predictions_from_output
from tabembed.models.heads import MemberMeanLoss
from tabembed.models.members import LinearMembers, MemberScaling
from tabembed.training.learner import Learner

SIZES = [(9, 5), (17, 9), (3, 2)]


def _inputs(n=64, seed=0):
    generator = torch.Generator().manual_seed(seed)
    codes = torch.stack([torch.randint(0, c, (n,), generator=generator) for c, _ in SIZES], 1)
    return codes, torch.randn(n, 4, generator=generator)


@pytest.mark.parametrize("task, d_out", [("regression", 1), ("binary", 1), ("multiclass", 5),
                                         ("multilabel", 3)])
def test_members_output_one_prediction_per_member_and_average_them(task, d_out):
    model = EntityEmbeddingMLP(embedding_sizes=SIZES, n_continuous=4, d_out=d_out, task=task,
                               n_members=4)
    output = model(*_inputs())
    assert output.shape == (64, 4, d_out)
    single = [predictions_from_output(output[:, j], task) for j in range(4)]
    expected = torch.stack(single).mean(0)
    torch.testing.assert_close(predictions_from_output(output, task), expected)
    assert predictions_from_output(output, task).shape == single[0].shape


def test_probabilities_are_averaged_not_logits():
    output = torch.tensor([[[4.0], [0.0]]])   # one row, two members
    mean_of_probabilities = (torch.sigmoid(torch.tensor(4.0)).item() + 0.5) / 2
    assert float(predictions_from_output(output, "binary")) == pytest.approx(
        mean_of_probabilities)
    assert mean_of_probabilities != pytest.approx(torch.sigmoid(torch.tensor(2.0)).item())


@pytest.mark.parametrize("task, target", [
    ("regression", torch.randn(64)), ("binary", torch.randint(0, 2, (64,)).float()),
    ("multiclass", torch.randint(0, 5, (64,))),
])
def test_member_loss_is_the_mean_of_the_member_losses(task, target):
    d_out = 5 if task == "multiclass" else 1
    output = torch.randn(64, 3, d_out)
    loss = loss_for_task(task)
    per_member = [loss(output[:, j], target) for j in range(3)]
    torch.testing.assert_close(loss(output, target), torch.stack(per_member).mean())
    assert isinstance(loss, MemberMeanLoss)
    weight = torch.rand(64) + 0.1   # sample weights: the mean of the weighted member losses
    per_member = [loss(output[:, j], target, weight) for j in range(3)]
    torch.testing.assert_close(loss(output, target, weight), torch.stack(per_member).mean())


def _single_and_ensemble(k=4):
    torch.manual_seed(0)
    single = EntityEmbeddingMLP(embedding_sizes=SIZES, n_continuous=4, dropout=0.0)
    ensemble = EntityEmbeddingMLP(embedding_sizes=SIZES, n_continuous=4, dropout=0.0,
                                  n_members=k, member_init="ones")
    state = {k: v for k, v in single.state_dict().items() if not k.startswith("head.")}
    missing, unexpected = ensemble.load_state_dict(state, strict=False)
    assert not unexpected and set(missing) == {"member_scaling.weight", "head.weight",
                                               "head.bias"}
    ensemble.head = LinearMembers.from_linear(single.head, k)
    return single, ensemble


@pytest.mark.parametrize("training", [True, False])
def test_k_identical_members_equal_one_model(training):
    single, ensemble = _single_and_ensemble()
    single.train(training)
    ensemble.train(training)
    inputs = _inputs()
    expected = single(*inputs)
    output = ensemble(*inputs)
    for j in range(4):   # batch norm over n * k identical rows has the same statistics
        torch.testing.assert_close(output[:, j], expected, rtol=1e-5, atol=1e-5)


def test_random_sign_adapters_make_members_differ():
    torch.manual_seed(0)
    scaling = MemberScaling(n_members=8, d=32)
    assert set(scaling.weight.detach().unique().tolist()) == {-1.0, 1.0}
    assert len({tuple(row) for row in scaling.weight.detach().tolist()}) == 8
    x = torch.randn(3, 32)
    torch.testing.assert_close(scaling(x)[:, 5], x * scaling.weight[5])
    with pytest.raises(ValueError, match="init"):
        MemberScaling(n_members=2, d=3, init="zeros")
    with pytest.raises(ValueError, match="n_members"):
        EntityEmbeddingMLP(embedding_sizes=SIZES, n_continuous=4, n_members=0)


def test_linear_ensemble_members_are_independent_linear_layers():
    layer = LinearMembers(n_members=3, d_in=4, d_out=2)
    x = torch.randn(5, 3, 4)
    for j in range(3):
        torch.testing.assert_close(layer(x)[:, j], x[:, j] @ layer.weight[j] + layer.bias[j])


def test_members_train_through_the_unchanged_learner():
    codes, continuous = _inputs(n=512)
    target = (continuous[:, 0] + (codes[:, 0] > 4).float() > 0.5).float()
    torch.manual_seed(0)
    model = EntityEmbeddingMLP(embedding_sizes=SIZES, n_continuous=4, task="binary",
                               n_members=4)
    learner = Learner(model, loss_for_task("binary"), (codes, continuous, target),
                      batch_size=64, random_state=0, device="cpu",
                      output_activation=lambda o: predictions_from_output(o, "binary"))
    learner.fit(5, 1e-2, schedule="one_cycle")
    probabilities = learner.predict((codes, continuous))
    assert probabilities.shape == (512,)
    accuracy = float(((probabilities > 0.5).float() == target).float().mean())
    assert accuracy > 0.9
    groups = model.layer_groups()
    assert model.member_scaling in list(groups[1].modules())
    assert isinstance(groups[2][0], nn.Module) and groups[2][0] is model.head


def test_new_options_add_no_state_to_a_default_model():
    # Files saved before these options existed must still load strictly.
    model = EntityEmbeddingMLP(embedding_sizes=SIZES, n_continuous=4)
    assert not any(key.startswith(("swap_noise", "mixup", "member_scaling"))
                   for key in model.state_dict())
    rebuilt = EntityEmbeddingMLP(embedding_sizes=SIZES, n_continuous=4,
                                 continuous_embedding="plr", n_members=3)
    copy = EntityEmbeddingMLP(embedding_sizes=SIZES, n_continuous=4,
                              continuous_embedding="plr", n_members=3)
    copy.load_state_dict(rebuilt.state_dict())   # strict: the same keys and shapes
    rebuilt.eval()
    copy.eval()
    torch.testing.assert_close(copy(*_inputs()), rebuilt(*_inputs()))
