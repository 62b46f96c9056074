"""``soads bench sensor``: LSTM-AE training seconds per epoch, SKAB evaluation end to end, and
batch inference windows/s for 8 sensors x 10 steps (target >= 100,000/s)."""
from __future__ import annotations

import logging
import os
import time

logger = logging.getLogger(__name__)


def run(skab_dir: str = "../shared/skab/data", sensor_conf: str = "conf/sensor.toml",
        repeats: int = 5) -> list[str]:
    """Run the benchmarks; returns printable lines."""
    import torch

    from soads.sensor import settings
    from soads.sensor.lstm_ae import throughput
    from soads.sensor.skab import evaluate_skab

    torch.set_num_threads(1)
    conf = settings.load(sensor_conf)
    params = conf.params("skab")
    lines = []
    arch = {k: params[k] for k in ("hidden_size", "latent_size", "batch_size")}
    t = throughput(n_sensors=8, window=10, repeats=repeats, **arch)
    lines.append(f"LSTM-AE (skab preset: hidden {arch['hidden_size']}, latent "
                 f"{arch['latent_size']}), 8 sensors x 10 steps, 1 torch thread:")
    lines.append(f"  training: {t['epoch_seconds']:.2f} s per epoch over 50,000 windows "
                 f"(batch {arch['batch_size']})")
    lines.append(f"  inference, network only: {t['forward_windows_per_s']:,.0f} windows/s "
                 f"({t['forward_windows_per_cpu_s']:,.0f} per CPU-s); target >= 100,000")
    lines.append(f"  inference, score() incl. eq. 2: {t['score_windows_per_s']:,.0f} windows/s "
                 f"({t['score_windows_per_cpu_s']:,.0f} per CPU-s)")
    if os.path.isdir(skab_dir):
        t0 = time.perf_counter()
        r = evaluate_skab(skab_dir, params=params, **conf.skab)
        lines.append(f"SKAB end to end ({r['files']} files, {r['points']:,} test points): "
                     f"{time.perf_counter() - t0:.1f} s, F1 {r['f1']:.2f}, FAR {r['far']:.2f} %, "
                     f"MAR {r['mar']:.2f} %")
    else:
        lines.append(f"SKAB end to end: skipped, no directory {skab_dir}")
    return lines
