"""sensor: the Sensor job's model (paper 000) -- windows per machine -> LSTM-AE -> anomaly score.

Modules, in data-flow order::

    soads.sensor.windows    sliding windows over (time x sensors) arrays      [numpy, pure]
    soads.sensor.lstm_ae    LSTMAutoencoder: fit / score / infer_threshold /
                            fit_threshold_fbeta / save / load                 [torch, lazy]
    soads.sensor.registry   <root>/<version>/{config.json, weights.pt, scaler.npz, threshold.json}
    soads.sensor.skab       SKAB benchmark (real sensors): loading + protocol evaluation
    soads.sensor.robot_arm  robot-arm simulator (paper Table 2) + evaluation (Table 4)

Importing this package does not import torch.
"""
