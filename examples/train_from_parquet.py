"""Train a classifier from Parquet by streaming, in one process or several (torchrun).

Run:
    python examples/train_from_parquet.py --rows 1000000
    torchrun --nproc_per_node 2 examples/train_from_parquet.py --rows 1000000

The same script runs both ways: the estimator joins the process group torchrun
describes, each process reads its own row groups, and DistributedDataParallel
averages the gradients. It writes a synthetic dataset (make_synthetic: several
files, row groups of 128k rows) unless one of that size is already in --data,
fits with ``EmbeddingMLPClassifier().fit(folder, y="target")`` (preprocessor
and target encoding fitted by streaming; 10% of rows held out by a hash of
their position for the per-epoch validation scores), predicts every row to
Parquet, and prints rows/s and peak RSS. Nothing is ever loaded whole.
"""

import argparse
import multiprocessing
import resource
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from tabembed import EmbeddingMLPClassifier
from tabembed.datasets import make_synthetic
from tabembed.streaming import open_dataset
from tabembed.training import distributed


def arguments():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--data", type=Path, default=Path("example_output/parquet_data"))
    parser.add_argument("--output", type=Path, default=Path("example_output"))
    parser.add_argument("--files", type=int, default=4)
    parser.add_argument("--row-group-rows", type=int, default=1 << 17)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


def write_dataset(folder: Path, rows: int, files: int, row_group_rows: int, seed: int) -> None:
    """make_synthetic's table as ``files`` Parquet files (runs in a child process, so the
    trainer's peak RSS is its own, not the generator's)."""
    X, y = make_synthetic(rows, task="classification", cardinalities=(10, 100, 1000),
                          n_continuous=4, noise=0.5, random_state=seed)
    table = pa.Table.from_pandas(X.assign(target=np.where(y == 1, "yes", "no")),
                                 preserve_index=False)
    folder.mkdir(parents=True, exist_ok=True)
    cuts = np.linspace(0, rows, files + 1).astype(int)
    for i in range(files):
        part = table.slice(cuts[i], cuts[i + 1] - cuts[i])
        temporary = folder / f".part-{i:03d}.parquet.tmp"
        pq.write_table(part, temporary, row_group_size=row_group_rows)
        temporary.replace(folder / f"part-{i:03d}.parquet")


def has_rows(folder: Path, rows: int) -> bool:
    try:
        return sum(pq.ParquetFile(f).metadata.num_rows for f in open_dataset(folder).files) == rows
    except (FileNotFoundError, ValueError, pa.ArrowInvalid):
        return False


def main() -> None:
    args = arguments()
    torch.set_num_threads(1)
    distributed.init_process_group()          # nothing under plain `python`
    say = distributed.rank_zero_only(print)   # one copy of each line, whatever the launch

    # %% Data: written once by rank 0 while the others wait.
    if distributed.is_main_process() and not has_rows(args.data, args.rows):
        say(f"writing {args.rows:,} rows to {args.data}/ ...")
        for stale in args.data.glob("*.parquet"):
            stale.unlink()
        child = multiprocessing.get_context("spawn").Process(
            target=write_dataset,
            args=(args.data, args.rows, args.files, args.row_group_rows, args.seed))
        child.start()
        child.join()
        if child.exitcode != 0:
            raise RuntimeError(f"writing the dataset failed (exit code {child.exitcode})")
    distributed.barrier()

    # %% Fit by streaming: the estimator's usual parameters, a folder and a column name.
    classifier = EmbeddingMLPClassifier(epochs=args.epochs, early_stopping=True,
                                        patience=args.epochs, random_state=args.seed)
    started = time.perf_counter()
    classifier.fit(args.data, y="target")
    elapsed = time.perf_counter() - started
    last = classifier.history_.iloc[-1]
    say(f"trained on {classifier.n_train_rows_:,} rows: {distributed.get_world_size()} "
        f"process(es), batch {classifier.training_config_.batch_size}, {args.epochs} epochs, "
        f"learning rate {classifier.lr_:.2e}")
    say(f"train rows/s: {classifier.n_train_rows_ * args.epochs / elapsed:,.0f} ({elapsed:.1f} s "
        "with the streaming fit of the preprocessor and the LR finder)")
    say(f"validation: accuracy {last['accuracy']:.4f}  log loss {last['valid_loss']:.4f}  "
        f"AUC {last['auc']:.4f}")

    # %% Predict every row to Parquet; under torchrun each rank writes its share.
    started = time.perf_counter()
    destination = args.output / ("predictions.parquet" if distributed.get_world_size() == 1
                                 else "predictions")
    written = classifier.predict_to_parquet(args.data, destination, keep_columns=["target"])
    distributed.barrier()
    say(f"predictions written to {destination} ({pq.ParquetFile(written).metadata.num_rows:,} "
        f"rows on rank 0, {time.perf_counter() - started:.1f} s)")

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024   # KiB on Linux
    peaks = distributed.all_gather_tensors(torch.tensor([peak]))
    say("peak RSS per process: " + ", ".join(f"{p:,.0f} MiB" for p in peaks.tolist()))
    distributed.destroy_process_group()


if __name__ == "__main__":
    main()
