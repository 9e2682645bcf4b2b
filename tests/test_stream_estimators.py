"""Estimators fitted from Parquet by streaming, in one process and under torchrun."""

import textwrap

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sklearn.metrics import accuracy_score
from stream_helpers import torchrun, write_parts

from tabembed.datasets import make_synthetic
from tabembed.estimators import (
    EmbeddingMLPClassifier,
    EmbeddingMLPRegressor,
    EntityEmbeddingTransformer,
)


@pytest.fixture(scope="module")
def adult_parquet(adult, tmp_path_factory):
    train, test = adult
    sample = train.sample(8000, random_state=0).reset_index(drop=True)
    folder = write_parts(sample, tmp_path_factory.mktemp("adult") / "train")
    return folder, sample, test.iloc[:4000]


def test_classifier_from_parquet_matches_the_dataframe_fit(adult_parquet, tmp_path):
    folder, sample, test = adult_parquet
    options = {"epochs": 2, "random_state": 0, "hidden": (64, 32)}
    streamed = EmbeddingMLPClassifier(**options).fit(folder, y="income")
    in_memory = EmbeddingMLPClassifier(**options).fit(sample.drop(columns="income"),
                                                      sample["income"])
    pre_s, pre_m = streamed.preprocessor_, in_memory.preprocessor_
    assert pre_s.categories_ == pre_m.categories_ and pre_s.medians_ == pre_m.medians_
    assert list(streamed.classes_) == ["<=50K", ">50K"] and streamed.n_train_rows_ == 8000
    X_test, y_test = test.drop(columns="income"), test["income"].astype(object)
    accuracy_s = accuracy_score(y_test, streamed.predict(X_test))
    accuracy_m = accuracy_score(y_test, in_memory.predict(X_test))
    assert accuracy_s > 0.8 and abs(accuracy_s - accuracy_m) < 0.02
    # Predictions to Parquet are the estimator's predictions, row for row, with the ids kept.
    test_folder = write_parts(test.reset_index(drop=True), tmp_path / "test", files=2,
                              row_group=700)
    written = pd.read_parquet(streamed.predict_to_parquet(
        test_folder, tmp_path / "predictions.parquet", keep_columns=["income"]))
    assert list(written.columns) == ["income", "prediction", "probability_<=50K",
                                     "probability_>50K"]
    np.testing.assert_allclose(written[["probability_<=50K", "probability_>50K"]].to_numpy(),
                               streamed.predict_proba(X_test), rtol=1e-5, atol=1e-6)
    assert (written["prediction"].to_numpy() == streamed.predict(X_test)).all()
    with pytest.raises(TypeError, match="name its target column"):
        EmbeddingMLPClassifier().fit(folder, y=sample["income"])


@pytest.mark.parametrize("labels", [["low", "mid", "high"], [3, 7, 11], [False, True]])
def test_parquet_labels_are_the_predicted_labels_with_their_type(labels, tmp_path):
    # The label column is taken from the classes in Arrow: the same values and Arrow type
    # as converting predict()'s labels would give.
    X, y = make_synthetic(1500, task="classification", n_classes=len(labels), noise=0.3,
                          random_state=3)
    target = np.array(labels, dtype=object if isinstance(labels[0], str) else None)[y]
    classifier = EmbeddingMLPClassifier(epochs=2, lr=1e-2, hidden=(16,), random_state=0)
    classifier.fit(X, target)
    path = classifier.predict_to_parquet(write_parts(X, tmp_path / "x", files=2, row_group=400),
                                         tmp_path / "p.parquet")
    expected = classifier.predict(X)
    assert pq.read_schema(path).field("prediction").type == pa.array(expected).type
    written = pd.read_parquet(path)["prediction"].to_numpy()
    assert written.tolist() == expected.tolist()


def test_early_stopping_holds_rows_out_of_the_stream(adult_parquet):
    folder, _, _ = adult_parquet
    classifier = EmbeddingMLPClassifier(epochs=2, early_stopping=True, validation_fraction=0.2,
                                        random_state=0, hidden=(32,)).fit(folder, y="income")
    assert 6100 < classifier.n_train_rows_ < 6700      # about 80% of 8,000
    assert {"valid_loss", "accuracy", "auc"} <= set(classifier.history_)


def test_regressor_and_transformer_from_parquet(tmp_path):
    X, y = make_synthetic(3000, noise=0.1, random_state=2)
    folder = write_parts(X.assign(target=y.to_numpy()), tmp_path / "data")
    regressor = EmbeddingMLPRegressor(epochs=3, lr=1e-2, y_range="auto", random_state=0)
    regressor.fit(folder, y="target")
    low, high = y.min(), y.max()
    span = high - low
    predictions = regressor.predict(X)
    assert predictions.min() >= low - 0.1 * span - 1e-6
    assert predictions.max() <= high + 0.1 * span + 1e-6
    assert np.corrcoef(predictions, y)[0, 1] > 0.8
    transformer = EntityEmbeddingTransformer(epochs=2, lr=1e-2, random_state=0)
    transformer.fit(folder, y="target")
    assert isinstance(transformer.estimator_, EmbeddingMLPRegressor)
    assert transformer.transform(X).shape[0] == 3000


# ------------------------------------------------------------------ torchrun

SCRIPT = textwrap.dedent('''
    import sys
    import torch
    from tabembed.estimators import EmbeddingMLPClassifier
    from tabembed.training import distributed

    folder, out = sys.argv[1], sys.argv[2]
    torch.set_num_threads(1)
    classifier = EmbeddingMLPClassifier(epochs=3, early_stopping=True, patience=3,
                                        random_state=4, hidden=(64, 32)).fit(folder, y="income")
    weights = {k: v for k, v in classifier.model_.state_dict().items()}
    torch.save({"weights": weights, "history": classifier.history_.to_dict("list")},
               f"{out}/rank{distributed.get_rank()}.pt")
''')


@pytest.mark.slow
def test_two_processes_agree_repeat_and_match_one_process(adult_parquet, tmp_path):
    import torch

    folder, _, _ = adult_parquet
    one = torchrun(SCRIPT, [folder], tmp_path / "one", 1)[0]
    first = torchrun(SCRIPT, [folder], tmp_path / "two", 2)
    again = torchrun(SCRIPT, [folder], tmp_path / "again", 2)
    for name, value in first[0]["weights"].items():
        assert torch.equal(value, first[1]["weights"][name]), name      # ranks agree
        assert torch.equal(value, again[0]["weights"][name]), name      # same seed, same run
    for column in ("train_loss", "valid_loss", "accuracy", "auc"):
        assert first[0]["history"][column] == first[1]["history"][column], column
    # The same validation rows (held out by hash) and the same global batch: the same
    # quality within noise (1,600 validation rows).
    accuracy_one = one["history"]["accuracy"][-1]
    accuracy_two = first[0]["history"]["accuracy"][-1]
    assert accuracy_one > 0.8 and abs(accuracy_one - accuracy_two) < 0.02, (accuracy_one,
                                                                           accuracy_two)


def test_estimators_refuse_mixed_files_and_careless_destinations(tmp_path):
    """Through the estimators: a file lacking a feature (fit, predict_to_parquet), the
    source as destination, a kept column named like an output column. Each is an error
    naming the file or column, and no data is lost."""
    X, y = make_synthetic(1200, task="classification", noise=0.3, random_state=5)
    frame = X.assign(target=y.to_numpy())
    folder = write_parts(frame, tmp_path / "data", files=3, row_group=400)
    lacking = write_parts(frame, tmp_path / "lacking", files=3, row_group=400)
    part = pq.read_table(lacking / "part-1.parquet").drop_columns(["num_0"])
    pq.write_table(part, lacking / "part-1.parquet")
    classifier = EmbeddingMLPClassifier(epochs=1, lr=1e-2, hidden=(16,), random_state=0)
    with pytest.raises(ValueError, match=r"part-1\.parquet lacks the column\(s\) \['num_0'\]"):
        classifier.fit(lacking, y="target")
    classifier.fit(folder, y="target")
    with pytest.raises(ValueError, match=r"part-1\.parquet lacks the column\(s\) \['num_0'\]"):
        classifier.predict_to_parquet(lacking, tmp_path / "p.parquet")
    source = folder / "part-0.parquet"
    content = source.read_bytes()
    with pytest.raises(ValueError, match="is the source file"):
        classifier.predict_to_parquet(source, source)
    with pytest.raises(ValueError, match="inside the source folder"):
        classifier.predict_to_parquet(folder, folder / "predictions.parquet")
    assert source.read_bytes() == content and len(list(folder.iterdir())) == 3
    with_prediction = tmp_path / "with_prediction.parquet"
    pq.write_table(pa.Table.from_pandas(frame.assign(prediction=-1), preserve_index=False),
                   with_prediction)
    with pytest.raises(ValueError, match=r"keep_columns \['prediction'\]"):
        classifier.predict_to_parquet(with_prediction, tmp_path / "p.parquet",
                                      keep_columns=["prediction"])
    assert not (tmp_path / "p.parquet").exists()
