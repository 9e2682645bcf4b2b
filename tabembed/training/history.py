"""History: one record per epoch (losses, metrics, rate, time), every batch's loss and rate."""

from __future__ import annotations

import pandas as pd


class History:
    def __init__(self) -> None:
        self.records: list[dict] = []
        self.batch_losses: list[float] = []
        self.batch_lrs: list[float] = []     # the last parameter group's rate at each step

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, key):
        """``history["valid_loss"]`` is that column over epochs; ``history[-1]`` a record."""
        if isinstance(key, str):
            return [record.get(key) for record in self.records]
        return self.records[key]

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame.from_records(self.records)

    def plot(self, path=None):
        """Losses (batches and epochs, training and validation), validation metrics and
        the learning rate of every step."""
        from tabembed.plotting import plot_history

        return plot_history(self, path=path)

    def state_dict(self) -> dict:
        return {"records": self.records, "batch_losses": self.batch_losses,
                "batch_lrs": self.batch_lrs}

    def load_state_dict(self, state: dict) -> None:
        self.records = list(state["records"])
        self.batch_losses = list(state["batch_losses"])
        self.batch_lrs = list(state.get("batch_lrs", []))
