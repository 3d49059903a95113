"""Custom trainers as a team would write them (`trainer: {name: tests.custom_trainers:...}` in params.yaml).

A trainer gets the training rows (the frame's `attrs` name the `label`, `key` and
`features`) and its params. `tenure_bands` returns an MLflow PythonModel that carries its own preprocessing: it bands
tenure and looks up the label rate of each (band, contract type) seen in training (times `scale`, 1 unless a
test wants scores outside [0, 1]).
"""

from __future__ import annotations

import mlflow.pyfunc
import numpy as np
import pandas as pd


class TenureBands(mlflow.pyfunc.PythonModel):
    """The outcome's mean per tenure band and contract type; the overall mean for anything unseen."""

    def __init__(self, edges: list[float], rates: dict[str, float], overall: float, scale: float = 1.0):
        self.edges, self.rates, self.overall, self.scale = edges, rates, overall, scale

    @staticmethod
    def cells(frame: pd.DataFrame, edges: list[float]) -> pd.Series:
        band = np.searchsorted(edges, frame["tenure_months"].fillna(-1).to_numpy(dtype=float), side="right")
        return pd.Series(band).astype(str) + "|" + frame["contract_type"].fillna("?").astype(str).to_numpy()

    def predict(self, context, model_input: pd.DataFrame, params=None) -> np.ndarray:
        cells = self.cells(model_input, self.edges)
        return np.array([self.rates.get(c, self.overall) for c in cells], dtype=float) * self.scale


def tenure_bands(frame: pd.DataFrame, params: dict) -> TenureBands:
    label = frame.attrs["label"]
    edges = [float(x) for x in np.quantile(frame["tenure_months"].dropna(), np.linspace(0, 1, int(params["bands"]) + 1)[1:-1])]
    cells = TenureBands.cells(frame, edges)
    rates = frame.groupby(cells.to_numpy())[label].mean().to_dict()
    return TenureBands(edges, {str(k): float(v) for k, v in rates.items()}, float(frame[label].mean()),
                       float(params.get("scale", 1.0)))  # scale: a broken model's scores, for the guardrail tests


def raises(frame: pd.DataFrame, params: dict):
    raise RuntimeError("the trainer's own bug")


def returns_a_string(frame: pd.DataFrame, params: dict):
    return "not a model"
