"""The flat bag tables of multi-valued features: ids, tokens, pooling, copies, threads."""

import copy
import pickle
import threading

import numpy as np
import pytest
import torch
from torch import nn

from tabembed.models import DotBias
from tabembed.models.collab import pool_bags
from tabembed.recommenders.bags import BagTable


def _random_bags(seed: int, n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(1, 30, rng.integers(0, 9)) for _ in range(n)]


def test_ids_give_back_each_bags_tokens_and_repeat_for_equal_bags():
    table = BagTable()
    bags = _random_bags(0, 3_000)
    ids = np.concatenate([table.register(bags[i:i + 37]) for i in range(0, len(bags), 37)])
    tokens, offsets = table.tensors()
    for bag, index in zip(bags, ids, strict=True):
        assert tokens[offsets[index]:offsets[index + 1]].tolist() == bag.tolist()
    assert (ids[[len(b) == 0 for b in bags]] == 0).all()          # empty: id 0
    assert np.array_equal(table.register(bags[:50]), ids[:50])    # same bags, same ids
    assert len(table) == len({tuple(b.tolist()) for b in bags})
    assert offsets[-1] == len(tokens)


def test_pooling_equals_the_padded_mean_it_replaces():
    bags = _random_bags(1, 500)
    table = BagTable()
    ids = torch.from_numpy(table.register(bags))[torch.randint(0, 500, (2_000,),
                                                              generator=torch.Generator())]
    embedding = nn.EmbeddingBag(30, 6, mode="mean", padding_idx=0)
    width = max(len(b) for b in bags)
    padded = torch.zeros(len(table), width, dtype=torch.long)
    tokens, offsets = table.tensors()
    for index in range(len(table)):
        bag = tokens[offsets[index]:offsets[index + 1]]
        padded[index, :len(bag)] = bag
    expected = embedding(padded[ids])
    pooled = pool_bags(table, ids, embedding)
    torch.testing.assert_close(pooled, expected)
    # The gradients too: each token's share of every row that holds it.
    weights = torch.randn(len(ids), 6)
    grad_flat = torch.autograd.grad((pooled * weights).sum(), embedding.weight)[0]
    grad_padded = torch.autograd.grad((embedding(padded[ids]) * weights).sum(),
                                      embedding.weight)[0]
    torch.testing.assert_close(grad_flat, grad_padded)


def test_copies_share_the_table_and_pickles_keep_it():
    table = BagTable()
    table.register(_random_bags(2, 20))
    model = DotBias(n_users=3, n_items=3, n_factors=2, bags=[(30, 8, "item")])
    model.attach_bag_tables([table])
    copied = copy.deepcopy(model)
    assert copied.__dict__["_bag_tables"][0] is table
    fresh = table.register([np.array([7, 7, 7, 7, 7, 7, 7, 7, 7])])[0]
    codes = torch.tensor([[1, 2, fresh]])
    assert torch.equal(copied(codes, torch.zeros(1, 0)), model(codes, torch.zeros(1, 0)))
    restored = pickle.loads(pickle.dumps(table))
    assert torch.equal(restored.tensors()[0], table.tensors()[0])
    assert restored.register([np.array([7] * 9)])[0] == fresh


def test_threads_registering_at_once_agree_on_ids():
    table = BagTable()
    bags = _random_bags(3, 2_000)
    results = [None] * 4

    def work(slot):
        results[slot] = table.register(bags[slot::2] + bags)

    threads = [threading.Thread(target=work, args=(slot,)) for slot in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    tokens, offsets = table.tensors()
    for result in results:
        for bag, index in zip(bags, result[-len(bags):], strict=True):
            assert tokens[offsets[index]:offsets[index + 1]].tolist() == bag.tolist()


def test_a_model_with_bags_and_no_table_says_so():
    model = DotBias(n_users=3, n_items=3, n_factors=2, bags=[(30, 8, "item")])
    with pytest.raises(RuntimeError, match="attach_bag_tables"):
        model(torch.tensor([[1, 2, 0]]), torch.zeros(1, 0))
