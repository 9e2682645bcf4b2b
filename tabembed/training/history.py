"""History: one record per epoch (losses, metrics, rate, time) and every batch's loss."""

from __future__ import annotations

import pandas as pd


class History:
    def __init__(self) -> None:
        self.records: list[dict] = []
        self.batch_losses: list[float] = []

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
        """Training and validation loss over epochs, plus batch losses."""
        from tabembed.plotting import plot_history

        return plot_history(self, path=path)

    def state_dict(self) -> dict:
        return {"records": self.records, "batch_losses": self.batch_losses}

    def load_state_dict(self, state: dict) -> None:
        self.records = list(state["records"])
        self.batch_losses = list(state["batch_losses"])
