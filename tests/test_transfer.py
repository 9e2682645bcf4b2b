import numpy as np
import pandas as pd
import pytest
import torch

from tabembed.estimators import EmbeddingMLPClassifier
from tabembed.models import DotBias, EntityEmbeddingMLP
from tabembed.preprocessing import TabularPreprocessor
from tabembed.transfer import embedding_tables, transfer_embeddings


def _pair(frame, sizes=None):
    preprocessor = TabularPreprocessor(cat_names=["job", "city"], cont_names=["x"],
                                       embedding_sizes=sizes).fit(frame)
    model = EntityEmbeddingMLP(embedding_sizes=list(preprocessor.embedding_sizes_.values()),
                               n_continuous=1)
    return preprocessor, model


SOURCE = pd.DataFrame({"job": ["cook", "pilot", "nurse", "cook"],
                       "city": ["Oslo", "Rome", "Oslo", "Lima"], "x": [1.0, 2, 3, 4]})
# Other vocabularies in another order, one value the source never saw, a categorical dtype
# whose codes disagree with the source's.
TARGET = pd.DataFrame({"job": pd.Categorical(["nurse", "welder", "cook"],
                                             categories=["welder", "nurse", "cook"]),
                       "city": ["Rome", "Rome", "Oslo"], "x": [0.0, 1, 2]})


def test_rows_are_copied_by_value_not_by_code():
    source, target = _pair(SOURCE, {"job": 3, "city": 3}), _pair(TARGET, {"job": 3, "city": 3})
    before = target[1].embeddings.embeddings[0].weight.detach().clone()
    report = transfer_embeddings(source, target)
    assert report == {"job": 2, "city": 2}
    source_tables, target_tables = embedding_tables(*source), embedding_tables(*target)
    for column in ("job", "city"):
        for value in target[0].categories_[column]:
            target_code = target[0].encode(column, [value])[0]
            source_code = source[0].encode(column, [value])[0]
            row = target_tables[column].weight[target_code]
            if source_code:
                torch.testing.assert_close(row, source_tables[column].weight[source_code])
            else:   # a value the source never saw keeps its own initialisation
                torch.testing.assert_close(row, before[target_code])
        torch.testing.assert_close(target_tables[column].weight[0],
                                   source_tables[column].weight[0])   # unknown token


def test_only_the_named_columns_move_and_errors_name_the_fix():
    source, target = _pair(SOURCE, {"job": 3, "city": 3}), _pair(TARGET, {"job": 3, "city": 3})
    city = target[1].embeddings.embeddings[1].weight.detach().clone()
    assert transfer_embeddings(source, target, columns=["job"]) == {"job": 2}
    torch.testing.assert_close(target[1].embeddings.embeddings[1].weight, city)
    with pytest.raises(ValueError, match="not a categorical column of the source"):
        transfer_embeddings(source, target, columns=["x"])
    narrow = _pair(TARGET, {"job": 2, "city": 3})
    with pytest.raises(ValueError, match=r"'job'.*width 3.*embedding_sizes=\{'job': 3\}"):
        transfer_embeddings(source, narrow)


def test_transfer_from_a_fitted_estimator_and_into_a_recommender():
    estimator = EmbeddingMLPClassifier(epochs=1, random_state=0, cat_names=["job", "city"],
                                       cont_names=["x"]).fit(SOURCE, [0, 1, 0, 1])
    width = estimator.preprocessor_.embedding_sizes_["city"][1]
    preprocessor = TabularPreprocessor(cat_names=["city", "job"], cont_names=[],
                                       embedding_sizes={"city": width, "job": width}).fit(TARGET)
    model = DotBias(n_users=3, n_items=4, n_factors=width)
    report = transfer_embeddings(estimator, (preprocessor, model), columns=["city"])
    assert report == {"city": 2}
    rome_source = estimator.preprocessor_.encode("city", ["Rome"])[0]
    rome_target = preprocessor.encode("city", ["Rome"])[0]
    torch.testing.assert_close(
        model.user_factors.weight[rome_target],
        estimator.model_.embeddings.embeddings[estimator.preprocessor_.cat_columns_.index(
            "city")].weight[rome_source])
    assert float(model.user_factors.weight[0].abs().sum()) == 0   # unknown user stays 0
    with pytest.raises(TypeError, match="pair"):
        transfer_embeddings(object(), estimator)
    assert np.isfinite(model.user_factors.weight.detach().numpy()).all()
