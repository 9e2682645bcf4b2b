import pytest
import torch
from torch.nn import functional

from tabembed.models import EntityEmbeddingMLP, loss_for_task, predictions_from_output
from tabembed.models.denoising import DenoisingAutoencoder, ReconstructionLoss, clean_target
from tabembed.pretraining import Unfreezing, fine_tune, pretrain

SIZES = [(6, 3), (6, 3), (4, 2)]


def _rows(n=2048, seed=0):
    """Column 1 copies column 0 and the number is column 2's code: denoising is learnable."""
    generator = torch.Generator().manual_seed(seed)
    first = torch.randint(1, 6, (n,), generator=generator)
    third = torch.randint(1, 4, (n,), generator=generator)
    codes = torch.stack([first, first, third], 1)
    continuous = third.float().unsqueeze(1) + 0.1 * torch.randn(n, 1, generator=generator)
    return codes, continuous


def _model():
    torch.manual_seed(0)
    return EntityEmbeddingMLP(embedding_sizes=SIZES, n_continuous=1, task="binary",
                              hidden=(32, 16))


def test_reconstruction_loss_is_the_mean_over_columns_of_ce_and_squared_error():
    codes, continuous = _rows(n=8)
    output = torch.randn(8, 6 + 6 + 4 + 1)
    loss = ReconstructionLoss([6, 6, 4], 1)(output, clean_target(codes, continuous))
    parts = [functional.cross_entropy(output[:, 0:6], codes[:, 0]),
             functional.cross_entropy(output[:, 6:12], codes[:, 1]),
             functional.cross_entropy(output[:, 12:16], codes[:, 2]),
             ((output[:, 16] - continuous[:, 0]) ** 2).mean()]
    torch.testing.assert_close(loss, torch.stack(parts).mean())


def test_pretraining_trains_the_models_own_embeddings_and_body():
    model = _model()
    autoencoder = DenoisingAutoencoder(model=model, swap_noise=0.2)
    codes, continuous = _rows()
    assert autoencoder(codes, continuous).shape == (2048, 6 + 6 + 4 + 1)
    assert autoencoder.model.embeddings is model.embeddings   # shared, not copied
    embeddings = model.embeddings.embeddings[0].weight.detach().clone()
    head = model.head.weight.detach().clone()
    learner = pretrain(model, codes, continuous, epochs=4, batch_size=128, lr=1e-2,
                       random_state=0)
    losses = learner.history.to_frame()["train_loss"].tolist()
    assert losses[-1] < 0.6 * losses[0], losses
    assert not torch.equal(model.embeddings.embeddings[0].weight, embeddings)
    assert torch.equal(model.head.weight, head)   # the task head is not part of it


def test_fine_tune_trains_the_head_first_then_unfreezes_one_group_an_epoch():
    model = _model()
    codes, continuous = _rows()
    target = (codes[:, 0] > 3).float()
    pretrain(model, codes, continuous, epochs=4, batch_size=128, lr=1e-2, random_state=0)
    frozen = model.embeddings.embeddings[0].weight.detach().clone()
    log = []
    learner = fine_tune(model, loss_for_task("binary"), (codes, continuous, target),
                        head_epochs=2, epochs=6, lr=3e-2, lr_ratio=10, batch_size=128,
                        random_state=0, log=log,
                        output_activation=lambda o: predictions_from_output(o, "binary"))
    everything = ("unfreeze", ["embeddings", "body", "head"])
    assert [(r["phase"], r["trainable"]) for r in log] == [
        ("head", ["head"]), ("head", ["head"]), ("unfreeze", ["body", "head"]),
        *[everything] * 5]
    peaks = {g: max(r["peak_lr"][g] for r in log[2:]) for g in ("embeddings", "body", "head")}
    assert peaks["head"] == pytest.approx(3e-2 / 2, rel=1e-3)
    assert peaks["body"] == pytest.approx(peaks["head"] / 10)
    assert peaks["embeddings"] == pytest.approx(peaks["head"] / 100)
    assert not torch.equal(model.embeddings.embeddings[0].weight, frozen)
    accuracy = ((learner.predict((codes, continuous)) > 0.5).float() == target).float().mean()
    assert float(accuracy) > 0.95
    with pytest.raises(ValueError, match="start"):
        Unfreezing(start=0)
