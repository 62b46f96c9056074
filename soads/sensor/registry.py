"""sensor: model registry -- versioned LSTM-AE models on disk, with a movable CURRENT pointer.

Layout::

    <root>/<version>/config.json, weights.pt, scaler.npz, threshold.json   (LSTMAutoencoder.save)
    <root>/<version>/training.json    training data range, sensors, metrics, score histogram
    <root>/CURRENT                                                          the serving version
    <root>/PROMOTIONS      promotion stack, one version a line (promote pushes, rollback pops)

Versions are ``v0001``, ``v0002``, ... in the order they were registered. A new version is
written into a temporary directory and renamed into place, so a half-written model is never
visible. Registering does not move ``CURRENT`` unless ``activate=True``; rolling back is
``set_current(root, older_version)`` (papers 003/004: roll a drifting model back). A loaded
model carries ``model_version_``, which every stored score must carry too.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile

from soads.sensor.lstm_ae import LSTMAutoencoder

logger = logging.getLogger(__name__)

CURRENT_FILE = "CURRENT"
PROMOTIONS_FILE = "PROMOTIONS"
TRAINING_FILE = "training.json"
_VERSION = re.compile(r"^v(\d{4,})$")


def list_versions(root) -> list[str]:
    """Registered versions, oldest first (``[]`` if ``root`` does not exist).

    Examples
    --------
    >>> list_versions("/nonexistent-registry")
    []
    """
    if not os.path.isdir(root):
        return []
    names = [n for n in os.listdir(root) if _VERSION.match(n)]
    return sorted(names, key=lambda n: int(_VERSION.match(n).group(1)))


def register(model: LSTMAutoencoder, root, activate: bool = False,
             metadata: dict | None = None) -> str:
    """Save a fitted model as the next version; optionally promote it (make it CURRENT).
    ``metadata`` (training data range, sensors, metrics) is written as ``training.json`` in the
    same atomic rename. Returns the version."""
    os.makedirs(root, exist_ok=True)
    existing = list_versions(root)
    n = int(_VERSION.match(existing[-1]).group(1)) + 1 if existing else 1
    version = f"v{n:04d}"
    tmp = tempfile.mkdtemp(prefix=".tmp-", dir=root)
    try:
        model.save(tmp)
        if metadata is not None:
            with open(os.path.join(tmp, TRAINING_FILE), "w") as f:
                json.dump(metadata, f, indent=2, sort_keys=True, default=str)
        os.rename(tmp, os.path.join(root, version))  # fails loudly if the version exists
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("registered model %s in %s", version, root)
    if activate:
        promote(root, version)
    return version


def set_current(root, version: str) -> None:
    """Point CURRENT at ``version`` (atomic replace); used both to promote and to roll back."""
    if version not in list_versions(root):
        raise KeyError(f"no model version {version!r} in {root}")
    tmp = os.path.join(root, f".{CURRENT_FILE}.tmp")
    with open(tmp, "w") as f:
        f.write(version + "\n")
    os.replace(tmp, os.path.join(root, CURRENT_FILE))
    logger.info("current model in %s is now %s", root, version)


def current_version(root) -> str | None:
    """The version CURRENT points at, or None if none was activated."""
    path = os.path.join(root, CURRENT_FILE)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return f.read().strip()


def load(root, version: str | None = None) -> LSTMAutoencoder:
    """Load ``version`` (default: CURRENT) and tag it with ``model_version_``."""
    version = version or current_version(root)
    if version is None:
        raise FileNotFoundError(f"no CURRENT model in {root}")
    if version not in list_versions(root):
        raise KeyError(f"no model version {version!r} in {root}")
    model = LSTMAutoencoder.load(os.path.join(root, version))
    model.model_version_ = version
    return model


def promotions(root) -> list[str]:
    """The promotion stack, oldest first (``[CURRENT]`` when only CURRENT was ever set)."""
    path = os.path.join(root, PROMOTIONS_FILE)
    if os.path.exists(path):
        with open(path) as f:
            return [line.strip() for line in f if line.strip()]
    cur = current_version(root)
    return [cur] if cur else []


def _write_promotions(root, stack: list[str]) -> None:
    tmp = os.path.join(root, f".{PROMOTIONS_FILE}.tmp")
    with open(tmp, "w") as f:
        f.write("".join(v + "\n" for v in stack))
    os.replace(tmp, os.path.join(root, PROMOTIONS_FILE))


def promote(root, version: str) -> None:
    """Make ``version`` CURRENT and push it on the promotion stack (the streaming job picks it up
    at its next micro-batch)."""
    stack = promotions(root)
    set_current(root, version)
    if not stack or stack[-1] != version:
        _write_promotions(root, stack + [version])


def rollback(root) -> str:
    """Pop the promotion stack: CURRENT goes back to the version promoted before it (papers
    003/004: roll a misbehaving model back). Returns the version now CURRENT."""
    stack = promotions(root)
    if len(stack) < 2:
        raise ValueError(f"nothing to roll back to in {root} (promotions: {stack})")
    set_current(root, stack[-2])
    _write_promotions(root, stack[:-1])
    return stack[-2]


def training_info(root, version: str) -> dict:
    """The ``training.json`` of ``version`` (``{}`` for a version registered without one)."""
    path = os.path.join(root, version, TRAINING_FILE)
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return json.load(f)
