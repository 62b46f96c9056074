"""Context detector (beyond the paper): model runs, scores, verdicts and explanations.

``context`` is the pure core (numpy, dicts); ``spark`` fits a model run on the event log and
scores objects on Spark by calling the core.
"""
