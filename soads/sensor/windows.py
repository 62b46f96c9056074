"""sensor: per-machine sliding windows over a (time x sensors) array  [numpy, pure core].

The Sensor job cuts each machine's standardised readings into overlapping windows of
``window`` consecutive time steps (paper 000, section 4.2 and Table 3: window size 3).
Window ``i`` covers rows ``i .. i + window - 1``; its score is reported at its LAST row
(``window_end_index``), so a point's prediction only uses readings up to that point, as an
online detector must.
"""

from __future__ import annotations

import logging

import numpy as np

logger = logging.getLogger(__name__)


def sliding_windows(X: np.ndarray, window: int, step: int = 1) -> np.ndarray:
    """All windows of ``window`` consecutive rows of ``X``.

    Parameters
    ----------
    X : array of shape (n_time, n_sensors)
    window : int
        Number of time steps per window (>= 1).
    step : int, optional (default=1)
        Stride between window starts.

    Returns
    -------
    windows : array of shape (n_windows, window, n_sensors), a copy (C-contiguous, float32).
        ``n_windows = max(0, (n_time - window) // step + 1)``.

    Examples
    --------
    >>> X = np.arange(8).reshape(4, 2)
    >>> sliding_windows(X, 3).tolist()
    [[[0.0, 1.0], [2.0, 3.0], [4.0, 5.0]], [[2.0, 3.0], [4.0, 5.0], [6.0, 7.0]]]
    >>> sliding_windows(X, 5).shape
    (0, 5, 2)
    """
    X = np.asarray(X, dtype=np.float32)
    if X.ndim != 2:
        raise ValueError(f"X must be 2-D (time x sensors), got shape {X.shape}")
    if window < 1 or step < 1:
        raise ValueError(f"window and step must be >= 1, got {window}, {step}")
    n_time, n_sensors = X.shape
    if n_time < window:
        return np.empty((0, window, n_sensors), dtype=np.float32)
    # (n_time - window + 1, n_sensors, window) view -> (n_windows, window, n_sensors) copy
    view = np.lib.stride_tricks.sliding_window_view(X, window, axis=0)[::step]
    return np.ascontiguousarray(view.transpose(0, 2, 1))


def window_end_index(n_time: int, window: int, step: int = 1) -> np.ndarray:
    """Row index of the last time step of each window made by :func:`sliding_windows`.

    Examples
    --------
    >>> window_end_index(4, 3).tolist()
    [2, 3]
    >>> window_end_index(7, 3, step=2).tolist()
    [2, 4, 6]
    """
    if n_time < window:
        return np.empty(0, dtype=np.int64)
    return np.arange(window - 1, n_time, step, dtype=np.int64)


def window_to_points(
    window_values: np.ndarray, n_time: int, window: int, fill: float = np.nan
) -> np.ndarray:
    """Point-wise values from per-window values (stride 1): each row takes the value of the
    window that ENDS at it; the first ``window - 1`` rows have no window and get ``fill``.

    Examples
    --------
    >>> window_to_points(np.array([5.0, 7.0]), 4, 3, fill=0.0).tolist()
    [0.0, 0.0, 5.0, 7.0]
    """
    window_values = np.asarray(window_values)
    expected = max(0, n_time - window + 1)
    if window_values.shape[0] != expected:
        raise ValueError(f"expected {expected} window values, got {window_values.shape[0]}")
    out = np.full(n_time, fill, dtype=np.result_type(window_values.dtype, np.asarray(fill)))
    out[window - 1 :] = window_values
    return out
