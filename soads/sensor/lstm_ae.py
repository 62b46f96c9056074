"""sensor: LSTMAutoencoder, the multi-sensor anomaly model of paper 000 (sections 4.2-4.3).

The model, as the paper describes it:

- features standardised (per sensor mean 0, variance 1, from the training data);
- sliding windows of ``window`` time steps (:mod:`soads.sensor.windows`);
- encoder: two stacked LSTM layers, ``n_features -> hidden_size -> latent_size``; the last time
  step of the second layer is the latent code (paper: "LSTM encoder which has two hidden layers");
- decoder: the latent code repeated ``window`` times -> LSTM (``latent_size -> hidden_size``) ->
  ReLU -> fully connected layer (``hidden_size -> n_features``) (paper: "LSTM, ReLU, FC layer");
- loss: mean absolute error between the window and its reconstruction (paper eq. 1);
  Adam, learning rate 0.001, batch 128 (Table 3);
- anomaly score (paper eq. 2, after Malhotra et al. 2016 [18]): the squared Mahalanobis distance
  ``(e - mu)^T Sigma^-1 (e - mu)`` of a window's reconstruction error vector ``e`` from the mean
  ``mu`` and covariance ``Sigma`` of the error vectors on normal (training) data. Higher = worse;
- threshold: either the one that maximises F-beta on labelled validation data (paper eq. 3,
  :meth:`LSTMAutoencoder.fit_threshold_fbeta`) or, without labels, the ``1 - fpr`` quantile of
  the scores of normal data (alibi-detect's ``infer_threshold``).

Choices the paper leaves open, made here and documented:

- ``e`` is the *signed* error ``x - x'`` of the whole window, flattened (``window x n_features``
  values; ``error_vector="full"``), or the per-sensor mean over the window (``"mean"``), or the
  last step only (``"last"``). Signed errors keep the direction of a deviation, which the
  covariance can use; the covariance is shrunk towards a scaled identity (``shrinkage``) so that
  it stays invertible with few training windows.
- A window's score is reported at its LAST time step; a point is flagged when the window ending
  at it is (causal: an online detector cannot look ahead). The first ``window - 1`` points of a
  series have no window and are never flagged.
- ``smoothing`` > 1 replaces each window score by the causal mean of the last ``smoothing``
  window scores: faults in a plant persist, single-window spikes mostly do not.

torch is imported inside functions only, so ``import soads.sensor`` works without it.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass

import numpy as np

from soads.sensor.windows import sliding_windows, window_to_points

logger = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "weights.pt"
SCALER_FILE = "scaler.npz"
THRESHOLD_FILE = "threshold.json"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class Standardizer:
    """Per-feature standardisation ``(x - mean) / scale``; constant features get scale 1."""

    mean: np.ndarray
    scale: np.ndarray

    @classmethod
    def fit(cls, X: np.ndarray) -> "Standardizer":
        X = np.asarray(X, dtype=np.float64)
        scale = X.std(axis=0)
        scale = np.where(scale > 1e-12, scale, 1.0)
        return cls(X.mean(axis=0), scale)

    def transform(self, X: np.ndarray) -> np.ndarray:
        return ((np.asarray(X, dtype=np.float64) - self.mean) / self.scale).astype(np.float32)


def _build_module(n_features: int, hidden_size: int, latent_size: int, window: int):
    """The torch module (defined here so that torch is only imported when a model is built)."""
    import torch
    from torch import nn

    class _LSTMAE(nn.Module):
        def __init__(self):
            super().__init__()
            # paper 000 §4.2: encoder with two hidden (LSTM) layers down to the latent code
            self.enc1 = nn.LSTM(n_features, hidden_size, batch_first=True)
            self.enc2 = nn.LSTM(hidden_size, latent_size, batch_first=True)
            # decoder: LSTM, ReLU, fully connected layer
            self.dec = nn.LSTM(latent_size, hidden_size, batch_first=True)
            self.act = nn.ReLU()
            self.out = nn.Linear(hidden_size, n_features)

        def forward(self, x):  # x: (batch, window, n_features)
            h, _ = self.enc1(x)  # (batch, window, hidden)
            _, (z, _) = self.enc2(h)  # z: (1, batch, latent), last step
            z = z[-1].unsqueeze(1).expand(-1, window, -1)  # (batch, window, latent)
            d, _ = self.dec(z)  # (batch, window, hidden)
            return self.out(self.act(d))  # (batch, window, n_features)

    return _LSTMAE()  # initial weights: fit re-initialises them under its seed, load replaces them


def _causal_mean(values: np.ndarray, k: int) -> np.ndarray:
    """Mean of the last ``k`` values at each position (fewer at the start).

    Examples
    --------
    >>> _causal_mean(np.array([1.0, 3.0, 5.0, 7.0]), 2).tolist()
    [1.0, 2.0, 4.0, 6.0]
    """
    if k <= 1 or len(values) == 0:
        return values
    c = np.cumsum(np.r_[0.0, values])
    idx = np.arange(1, len(values) + 1)
    lo = np.maximum(idx - k, 0)
    return (c[idx] - c[lo]) / (idx - lo)


def fbeta_threshold(scores, labels, beta: float = 1.0) -> tuple[float, float]:
    """The threshold ``t`` maximising F-beta of ``score > t`` (paper eq. 3) and that F-beta.

    ``t`` lies midway between the lowest flagged score and the next lower score.

    Examples
    --------
    >>> t, f = fbeta_threshold([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1])
    >>> round(t, 6), f
    (0.225, 0.8)
    """
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=bool)
    if len(s) != len(y):
        raise ValueError(f"{len(s)} scores but {len(y)} labels")
    if not y.any():
        raise ValueError("F-beta threshold needs at least one anomalous label")
    order = np.argsort(-s, kind="mergesort")
    s_sorted, y_sorted = s[order], y[order]
    tp = np.cumsum(y_sorted)
    fp = np.cumsum(~y_sorted)
    last_of_tie = np.r_[s_sorted[1:] != s_sorted[:-1], True]
    pos = np.flatnonzero(last_of_tie)
    tp, fp = tp[pos], fp[pos]
    fn = y.sum() - tp
    b2 = beta * beta
    f = (1 + b2) * tp / ((1 + b2) * tp + b2 * fn + fp)
    i = int(np.argmax(f))
    lower = s_sorted[pos[i] + 1] if pos[i] + 1 < len(s_sorted) else s_sorted[pos[i]] - 1.0
    return float((s_sorted[pos[i]] + lower) / 2.0), float(round(f[i], 12))


class LSTMAutoencoder:
    """LSTM encoder-decoder with a Mahalanobis anomaly score (paper 000, PyOD-style contract).

    Parameters
    ----------
    window : int, optional (default=10)
        Time steps per window (paper Table 3: 3).
    hidden_size : int, optional (default=64)
        Width of the first encoder LSTM and of the decoder LSTM.
    latent_size : int, optional (default=8)
        Width of the second encoder LSTM = the latent code (paper Table 3: 2).
    epochs : int, optional (default=20)
    batch_size : int, optional (default=128)
    lr : float, optional (default=0.001)
        Adam learning rate.
    error_vector : {"full", "mean", "last"}, optional (default="full")
        Which reconstruction errors form the vector ``e`` of eq. 2 (see the module docstring).
    shrinkage : float, optional (default=0.1)
        Covariance shrinkage ``(1 - s) Sigma + s * mean(diag Sigma) * I``.
    smoothing : int, optional (default=1)
        Causal moving mean over this many window scores (1 = none).
    score_method : {"mahalanobis", "mae"}, optional (default="mahalanobis")
        ``"mahalanobis"``: paper eq. 2. ``"mae"``: the window's mean absolute reconstruction
        error (standardised units), the plain score the paper improves on; it weighs every
        sensor equally and is far less sensitive to slow drift of a sensor that was nearly
        constant in the training data (see ``soads.sensor.skab``).
    fpr : float, optional (default=0.01)
        ``fit`` ends with ``infer_threshold(X, fpr)`` on the training data.
    seed : int, optional (default=0)
    n_threads : int, optional (default=1)
        ``torch.set_num_threads`` while fitting and scoring. One thread: these matrices are
        small, and on shared cores two threads were 14x slower than one (spin-waiting).

    Attributes
    ----------
    model_ : torch.nn.Module
    scaler_ : Standardizer
    error_mean_, error_precision_ : arrays, mean and inverse covariance of ``e`` on normal data
    threshold_ : float, a window (and point) is anomalous when its score is > threshold_
    n_features_ : int
    history_ : list of float, mean training loss per epoch
    epoch_seconds_ : list of float, wall time per epoch

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> t = np.arange(600)
    >>> X = np.c_[np.sin(t / 5), np.cos(t / 5)] + 0.05 * rng.normal(size=(600, 2))
    >>> m = LSTMAutoencoder(window=5, hidden_size=8, latent_size=2, epochs=2)
    >>> m.fit(X).predict(X).shape  # doctest: +SKIP
    (600,)
    """

    def __init__(
        self,
        window: int = 10,
        hidden_size: int = 64,
        latent_size: int = 8,
        epochs: int = 20,
        batch_size: int = 128,
        lr: float = 0.001,
        error_vector: str = "full",
        shrinkage: float = 0.1,
        smoothing: int = 1,
        score_method: str = "mahalanobis",
        fpr: float = 0.01,
        seed: int = 0,
        n_threads: int = 1,
    ):
        self.window = window
        self.hidden_size = hidden_size
        self.latent_size = latent_size
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.error_vector = error_vector
        self.shrinkage = shrinkage
        self.smoothing = smoothing
        self.score_method = score_method
        self.fpr = fpr
        self.seed = seed
        self.n_threads = n_threads

    # ------------------------------------------------------------------ config
    def get_params(self) -> dict:
        """The hyper-parameters given to ``__init__``."""
        return {
            k: getattr(self, k)
            for k in (
                "window",
                "hidden_size",
                "latent_size",
                "epochs",
                "batch_size",
                "lr",
                "error_vector",
                "shrinkage",
                "smoothing",
                "score_method",
                "fpr",
                "seed",
                "n_threads",
            )
        }

    # ------------------------------------------------------------------ fit
    def fit(
        self,
        X,
        init_from: "LSTMAutoencoder | None" = None,
        X_stats=None,
        scaler: Standardizer | None = None,
    ):
        """Train on normal data ``X`` (time x sensors), then fit the error statistics and a
        threshold (``infer_threshold(X, fpr)``).

        Parameters
        ----------
        X : array of shape (n_time, n_features), assumed normal; rows in time order.
        init_from : LSTMAutoencoder, optional
            A fitted model of the same architecture whose weights start the training
            (pre-training, e.g. on a long anomaly-free record). Its scaler is NOT reused.
        X_stats : array, optional
            Normal data for the error mean/covariance and the threshold (default ``X``).
        scaler : Standardizer, optional
            Use this standardisation instead of fitting one on ``X``.

        Returns
        -------
        self
        """
        import torch

        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2:
            raise ValueError(f"X must be 2-D (time x sensors), got shape {X.shape}")
        if X.shape[0] < self.window + 1:
            raise ValueError(f"need more than window={self.window} rows, got {X.shape[0]}")
        if self.score_method not in ("mahalanobis", "mae"):
            raise ValueError(f"unknown score_method {self.score_method!r}")
        if self.error_vector not in ("full", "mean", "last"):
            raise ValueError(f"unknown error_vector {self.error_vector!r}")
        torch.set_num_threads(self.n_threads)
        self.n_features_ = X.shape[1]
        self.scaler_ = Standardizer.fit(X) if scaler is None else scaler
        windows = torch.from_numpy(sliding_windows(self.scaler_.transform(X), self.window))

        self.model_ = _build_module(
            self.n_features_, self.hidden_size, self.latent_size, self.window
        )
        torch.manual_seed(self.seed)
        if init_from is not None:
            self.model_.load_state_dict(init_from.model_.state_dict())
        else:
            # initialise under the model's own seed (construction drew from the global RNG)
            for module in self.model_.modules():
                if hasattr(module, "reset_parameters") and module is not self.model_:
                    module.reset_parameters()
        self._train(windows)

        stats = X if X_stats is None else np.asarray(X_stats, dtype=np.float64)
        e = self._error_vectors(stats)
        self.error_mean_ = e.mean(axis=0)
        cov = np.atleast_2d(np.cov(e, rowvar=False))
        d = cov.shape[0]
        cov = (1 - self.shrinkage) * cov + self.shrinkage * np.trace(cov) / d * np.eye(d)
        cov += 1e-9 * np.eye(d)
        self.error_precision_ = np.linalg.inv(cov)
        self.infer_threshold(stats, self.fpr)
        return self

    def _train(self, windows) -> None:
        import torch

        gen = torch.Generator().manual_seed(self.seed)
        opt = torch.optim.Adam(self.model_.parameters(), lr=self.lr)
        loss_fn = torch.nn.L1Loss()  # paper eq. 1: mean absolute error
        n = windows.shape[0]
        self.history_, self.epoch_seconds_ = [], []
        self.model_.train()
        for epoch in range(self.epochs):
            t0 = time.perf_counter()
            perm = torch.randperm(n, generator=gen)
            total = 0.0
            for start in range(0, n, self.batch_size):
                batch = windows[perm[start : start + self.batch_size]]
                opt.zero_grad()
                loss = loss_fn(self.model_(batch), batch)
                loss.backward()
                opt.step()
                total += loss.item() * batch.shape[0]
            self.history_.append(total / n)
            self.epoch_seconds_.append(time.perf_counter() - t0)
            logger.debug("epoch %d loss %.5f", epoch, self.history_[-1])
        self.model_.eval()

    # ------------------------------------------------------------------ scoring
    def _windows(self, X) -> np.ndarray:
        return sliding_windows(self.scaler_.transform(X), self.window)

    def _reconstruct_windows(self, w: np.ndarray, batch_size: int = 1024) -> np.ndarray:
        import torch

        torch.set_num_threads(self.n_threads)
        out = np.empty_like(w)
        with torch.inference_mode():
            for start in range(0, len(w), batch_size):
                # the windows are a read-only strided view (sliding_windows): torch wants a
                # writable array, and the LSTM a contiguous one anyway
                batch = torch.from_numpy(np.require(w[start : start + batch_size], requirements="CW"))
                out[start : start + batch_size] = self.model_(batch).numpy()
        return out

    def reconstruct(self, X) -> np.ndarray:
        """Reconstructions of all windows of ``X``, in standardised units.

        Returns
        -------
        array of shape (n_windows, window, n_features)
        """
        return self._reconstruct_windows(self._windows(X))

    def reconstruction_errors(self, X) -> np.ndarray:
        """Signed reconstruction errors ``x - x'`` of all windows (standardised units).

        Returns
        -------
        array of shape (n_windows, window, n_features)
        """
        w = self._windows(X)
        return w - self._reconstruct_windows(w)

    def _error_vectors(self, X) -> np.ndarray:
        e = self.reconstruction_errors(X).astype(np.float64)
        if self.error_vector == "mean":
            return e.mean(axis=1)
        if self.error_vector == "last":
            return e[:, -1, :]
        return e.reshape(len(e), -1)

    def score(self, X) -> np.ndarray:
        """Anomaly score of each window of ``X`` (paper eq. 2, or the mean absolute error, see
        ``score_method``; then ``smoothing``); higher = more anomalous.

        Returns
        -------
        array of shape (n_windows,); window i ends at row ``i + window - 1``
        """
        if self.score_method == "mae":
            raw = np.abs(self.reconstruction_errors(X)).mean(axis=(1, 2), dtype=np.float64)
            return _causal_mean(raw, self.smoothing)
        d = self._error_vectors(X) - self.error_mean_
        raw = np.einsum("ij,ij->i", d @ self.error_precision_, d)  # (n_windows,)
        return _causal_mean(raw, self.smoothing)

    def score_windows(self, windows) -> np.ndarray:
        """Scores of windows already cut (raw, unstandardised readings), as the streaming job
        sees them. Equals :meth:`score` when ``smoothing == 1`` (smoothing needs the previous
        windows' scores and is not applied here).

        Parameters
        ----------
        windows : array of shape (n_windows, window, n_features)

        Returns
        -------
        array of shape (n_windows,)
        """
        w = np.asarray(windows, dtype=np.float64)
        if w.ndim != 3 or w.shape[1:] != (self.window, self.n_features_):
            raise ValueError(f"expected windows of shape (n, {self.window}, {self.n_features_}),"
                             f" got {w.shape}")
        n = len(w)
        ws = self.scaler_.transform(w.reshape(n * self.window, -1)).reshape(w.shape)
        ws = np.ascontiguousarray(ws, dtype=np.float32)
        e = (ws - self._reconstruct_windows(ws)).astype(np.float64)  # (n, window, n_features)
        if self.score_method == "mae":
            return np.abs(e).mean(axis=(1, 2))
        if self.error_vector == "mean":
            e = e.mean(axis=1)
        elif self.error_vector == "last":
            e = e[:, -1, :]
        else:
            e = e.reshape(n, -1)
        d = e - self.error_mean_
        return np.einsum("ij,ij->i", d @ self.error_precision_, d)

    def score_points(self, X) -> np.ndarray:
        """Point-wise scores: each row gets the score of the window ending at it (NaN for the
        first ``window - 1`` rows). Shape (n_time,)."""
        return window_to_points(self.score(X), len(X), self.window)

    def predict(self, X) -> np.ndarray:
        """Point-wise 0/1 predictions (1 = anomalous), shape (n_time,); rows without a window
        are 0."""
        s = self.score_points(X)
        return (np.nan_to_num(s, nan=-np.inf) > self.threshold_).astype(np.int8)

    # ------------------------------------------------------------------ thresholds
    def infer_threshold(self, X_normal, fpr: float) -> float:
        """Set ``threshold_`` to the ``1 - fpr`` quantile of the window scores of normal data."""
        if not 0.0 <= fpr < 1.0:
            raise ValueError(f"fpr must be in [0, 1), got {fpr}")
        self.threshold_ = float(np.quantile(self.score(X_normal), 1.0 - fpr))
        self.threshold_info_ = {"method": "fpr", "fpr": fpr}
        return self.threshold_

    def fit_threshold_fbeta(self, X_val, y_val, beta: float = 1.0) -> float:
        """Set ``threshold_`` to maximise F-beta (paper eq. 3) of the point predictions on
        labelled validation data; ``y_val`` has one 0/1 label per row of ``X_val``.
        Rows without a window are left out."""
        y_val = np.asarray(y_val)
        if len(y_val) != len(X_val):
            raise ValueError(f"{len(X_val)} rows but {len(y_val)} labels")
        s = self.score(X_val)
        self.threshold_, f = fbeta_threshold(s, y_val[self.window - 1 :], beta)
        self.threshold_info_ = {"method": "fbeta", "beta": beta, "fbeta_val": f}
        return self.threshold_

    # ------------------------------------------------------------------ persistence
    def save(self, path) -> None:
        """Write ``config.json``, ``weights.pt``, ``scaler.npz`` (scaler and error statistics)
        and ``threshold.json`` into directory ``path`` (created if missing)."""
        import torch

        os.makedirs(path, exist_ok=True)
        config = {
            "format_version": FORMAT_VERSION,
            "class": "LSTMAutoencoder",
            "n_features": self.n_features_,
            "params": self.get_params(),
        }
        with open(os.path.join(path, CONFIG_FILE), "w") as f:
            json.dump(config, f, indent=2, sort_keys=True)
        torch.save(self.model_.state_dict(), os.path.join(path, WEIGHTS_FILE))
        np.savez(
            os.path.join(path, SCALER_FILE),
            mean=self.scaler_.mean,
            scale=self.scaler_.scale,
            error_mean=self.error_mean_,
            error_precision=self.error_precision_,
        )
        with open(os.path.join(path, THRESHOLD_FILE), "w") as f:
            json.dump({"threshold": self.threshold_, **self.threshold_info_}, f, indent=2)

    @classmethod
    def load(cls, path) -> "LSTMAutoencoder":
        """Read a model written by :meth:`save`; its scores equal the saved model's."""
        import torch

        with open(os.path.join(path, CONFIG_FILE)) as f:
            config = json.load(f)
        if config.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"unsupported model format {config.get('format_version')!r}")
        model = cls(**config["params"])
        model.n_features_ = config["n_features"]
        model.model_ = _build_module(
            model.n_features_, model.hidden_size, model.latent_size, model.window
        )
        state = torch.load(os.path.join(path, WEIGHTS_FILE), weights_only=True)
        model.model_.load_state_dict(state)
        model.model_.eval()
        with np.load(os.path.join(path, SCALER_FILE)) as z:
            model.scaler_ = Standardizer(z["mean"], z["scale"])
            model.error_mean_ = z["error_mean"]
            model.error_precision_ = z["error_precision"]
        with open(os.path.join(path, THRESHOLD_FILE)) as f:
            th = json.load(f)
        model.threshold_ = float(th.pop("threshold"))
        model.threshold_info_ = th
        return model


def throughput(
    n_sensors: int = 8,
    window: int = 10,
    n_train_windows: int = 50000,
    n_score_windows: int = 100000,
    repeats: int = 5,
    seed: int = 0,
    **params,
) -> dict:
    """Measure training and batch-inference speed on random data (medians over ``repeats``).

    Timings on shared cores vary a lot: both wall-clock and process-CPU rates are returned.

    Returns
    -------
    dict: epoch_seconds (one epoch over ``n_train_windows`` at the model's batch size),
    forward_windows_per_s, forward_windows_per_cpu_s (network only, batches of 1024),
    score_windows_per_s, score_windows_per_cpu_s (``score()``: windows, network, eq. 2)
    """
    import torch

    rng = np.random.default_rng(seed)
    X = rng.standard_normal((max(n_train_windows, n_score_windows) + window - 1, n_sensors))
    model = LSTMAutoencoder(window=window, epochs=2, seed=seed, **params)
    model.fit(X[: n_train_windows + window - 1])
    w = model._windows(X[: n_score_windows + window - 1])

    def rates(fn):
        wall, cpu = [], []
        for _ in range(repeats):
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            wall.append(n_score_windows / (time.perf_counter() - t0))
            cpu.append(n_score_windows / max(time.process_time() - c0, 1e-9))
        return float(np.median(wall)), float(np.median(cpu))

    torch.set_num_threads(model.n_threads)
    fw, fc = rates(lambda: model._reconstruct_windows(w))
    sw, sc = rates(lambda: model.score(X[: n_score_windows + window - 1]))
    return {
        "epoch_seconds": float(np.median(model.epoch_seconds_)),
        "forward_windows_per_s": fw,
        "forward_windows_per_cpu_s": fc,
        "score_windows_per_s": sw,
        "score_windows_per_cpu_s": sc,
    }
