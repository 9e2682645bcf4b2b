"""Train a classifier from Parquet by streaming, in one process or several (torchrun).

Run:
    python examples/train_from_parquet.py --rows 1000000
    torchrun --nproc_per_node 2 examples/train_from_parquet.py --rows 1000000

The same script runs both ways. It writes a synthetic dataset (make_synthetic:
several files, row groups of 128k rows) unless one of that size is already in
--data, fits the preprocessor and the target encoding by streaming (rank 0,
then broadcast), trains an entity-embedding MLP on each rank's shard of the
row groups (DistributedDataParallel under torchrun), validates on 10% of rows
held out by a hash of their position, predicts every row to Parquet, and
prints rows/s and peak RSS. Nothing is ever loaded whole into memory.

Written against the lowest-level API (Learner, streaming sources, distributed
helpers); once the estimators take a stream this becomes
``EmbeddingMLPClassifier().fit("data/", y="target")``.
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

from tabembed.datasets import make_synthetic
from tabembed.models import EntityEmbeddingMLP, loss_for_task
from tabembed.preprocessing import TabularPreprocessor
from tabembed.streaming import (
    TableTransform,
    ValidationSplit,
    fit_preprocessor,
    fit_target,
    open_dataset,
    predict_to_parquet,
    train_valid_sources,
)
from tabembed.targets import TargetTransformer
from tabembed.training import distributed
from tabembed.training.learner import Learner
from tabembed.training.schedules import OneCycle


def arguments():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--data", type=Path, default=Path("example_output/parquet_data"))
    parser.add_argument("--output", type=Path, default=Path("example_output"))
    parser.add_argument("--files", type=int, default=4)
    parser.add_argument("--row-group-rows", type=int, default=1 << 17)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=None, help="per process (auto)")
    parser.add_argument("--lr", type=float, default=3e-3)
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
    distributed.init_process_group()                    # nothing under plain `python`
    rank, world_size = distributed.get_rank(), distributed.get_world_size()
    main_process = distributed.is_main_process()
    say = distributed.rank_zero_only(print)
    try:
        # %% Data: written once by rank 0 while the others wait.
        if main_process and not has_rows(args.data, args.rows):
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

        # %% Fit the preprocessor and the target encoding by streaming, once, on rank 0.
        started = time.perf_counter()
        fitted = None
        if main_process:
            preprocessor = fit_preprocessor(args.data, TabularPreprocessor(), exclude=["target"])
            fitted = (preprocessor.to_dict(), fit_target(args.data, "target").to_dict())
        pre_state, target_state = distributed.broadcast_object(fitted)
        preprocessor = TabularPreprocessor.from_dict(pre_state)
        target = TargetTransformer.from_dict(target_state)
        say(f"preprocessor and target fitted by streaming in {time.perf_counter() - started:.1f} s"
            f" ({len(preprocessor.cat_columns_)} categorical, "
            f"{len(preprocessor.cont_columns_)} continuous, classes {target.classes_.tolist()})")

        # %% Sources: each rank streams its own row groups; 10% of rows held out by hash.
        seed = distributed.shared_seed(args.seed)
        transform = TableTransform(preprocessor, "target", target)
        split = ValidationSplit(0.1, seed=seed)
        train, valid = train_valid_sources(args.data, transform, split,
                                           batch_size=args.batch_size or "auto",
                                           random_state=seed, rank=rank, world_size=world_size)
        batch_size = train.batch_size
        distributed.check_same_on_all_ranks("batches per epoch", len(train))

        # %% Model and loop; DDP under torchrun, the plain model otherwise.
        torch.manual_seed(seed)
        model = EntityEmbeddingMLP(embedding_sizes=list(preprocessor.embedding_sizes_.values()),
                                   n_continuous=len(preprocessor.cont_columns_), d_out=1,
                                   task="binary")
        learner = Learner(distributed.wrap_model(model), loss_for_task("binary"), train,
                          random_state=seed, num_threads=1, verbose=0)
        say(f"training on {train.n_rows:,} rows: {world_size} process(es), {len(train)} steps "
            f"of {batch_size} rows per process per epoch, {args.epochs} epochs")
        started = time.perf_counter()
        learner.fit(args.epochs, args.lr, schedule=OneCycle())
        elapsed = time.perf_counter() - started
        distributed.average_buffers(model)     # batch-norm statistics: the same on every rank
        train_loss = distributed.reduce_mean(learner.history.records[-1]["train_loss"], 1)
        say(f"train rows/s: {train.n_rows * args.epochs / elapsed:,.0f} "
            f"({elapsed:.1f} s, last epoch's train loss {train_loss:.4f})")

        # %% Validation: each rank its shard, sums reduced over ranks.
        model.eval()
        loss_sum = correct = count = 0.0
        with torch.inference_mode():
            for codes, continuous, y in valid:
                logits = model(codes, continuous)[:, 0]
                loss_sum += float(torch.nn.functional.binary_cross_entropy_with_logits(
                    logits, y, reduction="sum"))
                correct += float(((logits > 0).float() == y).sum())
                count += len(y)
        loss_sum, correct, count = distributed.all_reduce_sum([loss_sum, correct, count])
        say(f"validation ({count:,.0f} rows): accuracy {correct / count:.4f}  "
            f"log loss {loss_sum / count:.4f}")

        # %% Predict every row to Parquet; rank r writes its contiguous share.
        started = time.perf_counter()
        destination = args.output / ("predictions.parquet" if world_size == 1 else "predictions")
        written = predict_to_parquet(
            args.data, destination, lambda codes, continuous: torch.sigmoid(
                model(codes, continuous))[:, 0], preprocessor,
            output_names=[f"p_{target.classes_[1]}"], rank=rank, world_size=world_size)
        distributed.barrier()
        rows = pq.ParquetFile(written).metadata.num_rows
        say(f"predictions written to {destination} ({rows:,} rows on rank 0, "
            f"{time.perf_counter() - started:.1f} s)")

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024   # KiB on Linux
        peaks = distributed.all_gather_tensors(torch.tensor([peak]))
        say("peak RSS per process: " + ", ".join(f"{p:,.0f} MiB" for p in peaks.tolist()))
    except BaseException:
        distributed.destroy_process_group(wait=False)    # another rank may never arrive
        raise
    distributed.destroy_process_group()


if __name__ == "__main__":
    main()
