import json

import numpy as np
import pandas as pd
import pytest

from tabembed.targets import TargetTransformer


def test_binary_labels_from_adult(adult):
    train, test = adult
    target = TargetTransformer().fit(train["income"])
    assert target.task_ == "binary" and list(target.classes_) == ["<=50K", ">50K"]
    codes = target.transform(test["income"])
    assert codes.dtype == np.int64 and codes.sum() == 3846
    assert (target.inverse_transform(codes) == test["income"].astype(object).to_numpy()).all()
    assert target.n_outputs_ == 1


def test_multiclass_and_unseen_label():
    target = TargetTransformer().fit(["b", "a", "c", "a"])
    assert target.task_ == "multiclass" and target.n_outputs_ == 3
    assert target.transform(["c", "a"]).tolist() == [2, 0]
    with pytest.raises(ValueError, match=r"not seen in training: \['z'\]"):
        target.transform(["a", "z"])


def test_multilabel_indicator_and_label_sets():
    frame = pd.DataFrame({"x": [1, 0, 1], "y": [0, 0, 1], "z": [1, 1, 0]})
    target = TargetTransformer().fit(frame)
    assert target.task_ == "multilabel" and list(target.classes_) == ["x", "y", "z"]
    assert target.transform(frame).dtype == np.float32 and target.n_outputs_ == 3
    sets = TargetTransformer().fit([["a", "b"], ["b"], []])
    assert sets.task_ == "multilabel"
    np.testing.assert_array_equal(sets.transform([["b"], ["a"]]), [[0, 1], [1, 0]])


@pytest.mark.parametrize("scale", [None, "standard", "log"])
def test_regression_round_trip(scale):
    y = np.array([1.0, 2.0, 5.0, 10.0])
    target = TargetTransformer(task="regression", scale=scale).fit(y)
    encoded = target.transform(y)
    np.testing.assert_allclose(target.inverse_transform(encoded), y, rtol=1e-6)
    if scale == "standard":
        np.testing.assert_allclose(encoded.mean(), 0, atol=1e-6)
    restored = TargetTransformer.from_dict(json.loads(json.dumps(target.to_dict())))
    np.testing.assert_array_equal(restored.transform(y), encoded)


def test_bad_targets():
    with pytest.raises(ValueError, match="missing"):
        TargetTransformer().fit([1.0, np.nan])
    with pytest.raises(ValueError, match="single class"):
        TargetTransformer(task="binary").fit(["a", "a"])
    with pytest.raises(ValueError, match="greater than -1"):
        TargetTransformer(task="regression", scale="log").fit([-2.0, 1.0])
    with pytest.raises(ValueError, match="task must be"):
        TargetTransformer(task="ranking").fit([1, 2])
    with pytest.raises(ValueError, match="0 rows"):
        TargetTransformer().fit([])


@pytest.mark.parametrize("labels", [
    np.array(["b", "a", "b", "c", "a"] * 40, dtype=object),
    np.array(["yes", "no"] * 50),                          # numpy strings
    np.array([3, 1, 3, 2] * 30),
    np.array([0.0, 1.0, 1.0, 0.0] * 30),                   # integral floats: classes
    np.array([0.5, 1.25, 2.0] * 30),                       # continuous
    np.array([True, False, True] * 30),
    np.array([1, "a", 1, "a"] * 30, dtype=object),         # non-string objects
    np.array([[0, 1], [1, 0], [1, 1]] * 30),               # 2-D: left as it is
])
def test_distinct_labels_give_scikit_learns_answers_and_the_same_codes(labels):
    """type_of_target and np.unique on the distinct labels equal their answers on every
    row, and codes found per distinct label equal a search per row."""
    from sklearn.utils.multiclass import type_of_target

    from tabembed.targets import distinct_labels

    distinct = distinct_labels(labels)
    assert type_of_target(distinct) == type_of_target(labels)
    if labels.ndim == 1:
        assert len(distinct) == len(set(labels.tolist()))
        if type_of_target(labels) in ("binary", "multiclass"):
            np.testing.assert_array_equal(np.unique(distinct), np.unique(labels))
            transformer = TargetTransformer().fit(labels)
            np.testing.assert_array_equal(transformer.transform(labels),
                                          np.searchsorted(transformer.classes_, labels))
    else:
        assert distinct is labels
