"""Alerts and automated actions (Prometheus Alertmanager semantics) over what the jobs write.

- :mod:`soads.alerts.delivery`  HTTP out: Prometheus Alertmanager's ``/api/v2/alerts`` and
  webhooks with retry and backoff (stdlib only)
"""
