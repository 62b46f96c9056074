"""What the event job keeps in its checkpoint beside Spark's own files: which state operator made
the state (refused by the other one), and the committed micro-batches (read by benchmarks and
tests to time latency and to wait for progress).

A Spark checkpoint is ``<checkpoint_root>/<query name>`` with ``offsets/<batch id>`` and
``commits/<batch id>`` files; both helpers read them with local file calls.
"""
from __future__ import annotations

import json
import logging
import os

from soads.stream.state import STATE_FORMATS

logger = logging.getLogger(__name__)

OPERATOR_MARK = "state_operator"  # file in the checkpoint directory: the STATE_FORMATS entry


def committed_batches(checkpoint_root: str, name: str) -> list[tuple[float, int]]:
    """``[(commit wall time, end offset)]`` of a Kafka-fed query's committed micro-batches, in
    order, read from its checkpoint ``<checkpoint_root>/<name>``: the commit file's mtime and
    the largest partition offset the batch read up to (exclusive). Benchmarks time latency with
    it; tests wait on it. Any Kafka-fed query (the sensor job's too)."""
    commits = os.path.join(checkpoint_root, name, "commits")
    if not os.path.isdir(commits):
        return []
    out = []
    for f in sorted((f for f in os.listdir(commits) if f.isdigit()), key=int):
        with open(os.path.join(checkpoint_root, name, "offsets", f)) as fh:
            ends = json.loads(fh.read().splitlines()[2]).popitem()[1]
        out.append((os.path.getmtime(os.path.join(commits, f)), max(int(v) for v in ends.values())))
    return out


def check_operator(checkpoint: str, operator: str) -> None:
    """The state's format is the operator's: refuse to resume a checkpoint with the other one
    (its batch ids are in the ledger, so starting over would skip batches), or one whose state
    an older version wrote in another format (:data:`soads.stream.state.STATE_FORMATS`). A new
    checkpoint is marked with this operator's format."""
    if "://" in checkpoint and not checkpoint.startswith("file://"):
        return  # a cluster file system: nothing to check with local file calls
    checkpoint = checkpoint[len("file://"):] if checkpoint.startswith("file://") else checkpoint
    os.makedirs(checkpoint, exist_ok=True)
    mark = os.path.join(checkpoint, OPERATOR_MARK)
    want = STATE_FORMATS[operator]
    if os.path.exists(mark):
        with open(mark) as fh:
            made = fh.read().strip()
        made_op = made.split()[0] if made else ""
        if made_op != operator:
            raise ValueError(f"checkpoint {checkpoint} was made with stream.state_operator="
                             f"{made_op}; resume it with that operator (or start a new checkpoint "
                             "and a new database)")
        if made != want:
            raise ValueError(f"checkpoint {checkpoint} holds state in format {made!r}, this "
                             f"version writes {want!r}: start a new checkpoint and a new database "
                             "(or finish this one with the version that made it)")
    else:
        with open(mark, "w") as fh:
            fh.write(want + "\n")
