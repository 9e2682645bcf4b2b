"""Helpers shared by the Parquet-stream tests: writing a frame as Parquet parts, and
running a script under torchrun."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq


def write_parts(frame: pd.DataFrame, folder: Path, files: int = 3,
                row_group: int = 1000) -> Path:
    """``frame`` as ``files`` Parquet files in ``folder`` (row groups of ``row_group``)."""
    folder.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pandas(frame, preserve_index=False)
    cuts = np.linspace(0, len(frame), files + 1).astype(int)
    for i in range(files):
        pq.write_table(table.slice(cuts[i], cuts[i + 1] - cuts[i]), folder / f"part-{i}.parquet",
                       row_group_size=row_group)
    return folder


def torchrun(script: str, arguments: list, out: Path, processes: int) -> list:
    """Run ``script`` (its text) under torchrun with ``arguments`` and ``out`` last; it
    saves ``out/rank{r}.pt`` per rank, which come back loaded."""
    import torch

    out.mkdir()
    path = out / "fit.py"
    path.write_text(script)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={processes}",
               "--master_addr=127.0.0.1", f"--master_port={port}", str(path),
               *map(str, arguments), str(out)]
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, env=environment, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(processes)]
