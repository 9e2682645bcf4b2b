"""Command line: ``python -m tabembed demo`` (also the ``tabembed`` console script)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from tabembed._version import __version__


def demo(output_dir: Path, epochs: int | None, random_state: int, verbose: int) -> dict:
    """Train the default classifier on the shipped Adult data and report test scores."""
    import numpy as np
    from sklearn.metrics import accuracy_score, log_loss, roc_auc_score

    from tabembed.datasets import load_adult
    from tabembed.estimators import EmbeddingMLPClassifier
    from tabembed.plotting import plot_embeddings

    train, test = load_adult()
    X_train, y_train = train.drop(columns="income"), train["income"]
    X_test, y_test = test.drop(columns="income"), test["income"]
    options = {"random_state": random_state, "verbose": verbose}
    if epochs is not None:
        options["epochs"] = epochs
    classifier = EmbeddingMLPClassifier(**options)
    print(f"Training {classifier!r} on UCI Adult ({len(train):,} rows; "
          f"test set {len(test):,} rows)...", flush=True)
    if verbose:
        print("Per-epoch scores are on the test set: reported only, nothing is chosen on it.",
              flush=True)
    started = time.perf_counter()
    classifier.fit(X_train, y_train, eval_set=(X_test, y_test))
    seconds = time.perf_counter() - started
    probabilities = classifier.predict_proba(X_test)
    positive = np.asarray(y_test == classifier.classes_[1])
    scores = {
        "accuracy": accuracy_score(y_test.astype(object), classifier.predict(X_test)),
        "auc": roc_auc_score(positive, probabilities[:, 1]),
        "log_loss": log_loss(positive, probabilities[:, 1]),
        "train_seconds": seconds,
        "lr": classifier.lr_,
    }
    output_dir.mkdir(parents=True, exist_ok=True)
    written = []
    if classifier.lr_finder_ is not None:
        classifier.lr_finder_.plot(output_dir / "lr_finder.png")
        written.append("lr_finder.png")
    classifier.learner_.history.plot(output_dir / "training_curves.png")
    written.append("training_curves.png")
    education = classifier.preprocessor_.cat_columns_.index("education")
    table = classifier.model_.embeddings.embeddings[education].weight.detach().cpu().numpy()
    labels = ["(unknown)", *classifier.preprocessor_.categories_["education"]]
    plot_embeddings(table, labels, output_dir / "education_embeddings.png",
                    title="Adult: learned 'education' embeddings (PCA)")
    written.append("education_embeddings.png")
    print(f"\nlearning rate (LR finder, minimum / 10): {scores['lr']:.2e}")
    print(f"test accuracy: {scores['accuracy']:.4f}")
    print(f"test AUC:      {scores['auc']:.4f}")
    print(f"test log loss: {scores['log_loss']:.4f}")
    print(f"training time: {seconds:.1f} s (LR finder included)")
    print(f"plots written to {output_dir}/: {', '.join(written)}")
    return scores


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="tabembed", description="tabembed's command line. 'tabembed demo' (or "
        "'python -m tabembed demo') trains the default classifier on UCI Adult.")
    parser.add_argument("--version", action="version", version=f"tabembed {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser(
        "demo", help="train the default classifier on UCI Adult, print test scores, save plots",
        description="Train EmbeddingMLPClassifier (defaults: LR finder, one-cycle) on the "
                    "shipped UCI Adult data; print test accuracy, AUC, log loss and training "
                    "time; write the LR-finder curve, training curves and an embedding plot.")
    run.add_argument("--output-dir", type=Path, default=Path("demo_output"),
                     help="folder for the PNG plots (default: demo_output)")
    run.add_argument("--epochs", type=int, default=None, help="override the default epochs")
    run.add_argument("--random-state", type=int, default=0)
    run.add_argument("--verbose", type=int, default=1)
    args = parser.parse_args(argv)
    if args.command == "demo":
        demo(args.output_dir, args.epochs, args.random_state, args.verbose)
    return 0


if __name__ == "__main__":
    sys.exit(main())
