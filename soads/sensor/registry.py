"""sensor: model registry -- versioned LSTM-AE models on disk, with a movable CURRENT pointer.

Layout::

    <root>/<version>/config.json, weights.pt, scaler.npz, threshold.json   (LSTMAutoencoder.save)
    <root>/CURRENT                                                          the serving version

Versions are ``v0001``, ``v0002``, ... in the order they were registered. A new version is
written into a temporary directory and renamed into place, so a half-written model is never
visible. Registering does not move ``CURRENT`` unless ``activate=True``; rolling back is
``set_current(root, older_version)`` (papers 003/004: roll a drifting model back). A loaded
model carries ``model_version_``, which every stored score must carry too.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile

from soads.sensor.lstm_ae import LSTMAutoencoder

logger = logging.getLogger(__name__)

CURRENT_FILE = "CURRENT"
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


def register(model: LSTMAutoencoder, root, activate: bool = False) -> str:
    """Save a fitted model as the next version; optionally make it CURRENT. Returns the version."""
    os.makedirs(root, exist_ok=True)
    existing = list_versions(root)
    n = int(_VERSION.match(existing[-1]).group(1)) + 1 if existing else 1
    version = f"v{n:04d}"
    tmp = tempfile.mkdtemp(prefix=".tmp-", dir=root)
    try:
        model.save(tmp)
        os.rename(tmp, os.path.join(root, version))  # fails loudly if the version exists
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("registered model %s in %s", version, root)
    if activate:
        set_current(root, version)
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
