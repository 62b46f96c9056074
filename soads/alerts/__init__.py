"""Alerts and automated actions (Prometheus Alertmanager semantics) over what the jobs write:
rules -> alerts -> notifications and actions (DESIGN.md "Alert").

- :mod:`soads.alerts.rules`     one pure function per rule kind: rows -> candidates
- :mod:`soads.alerts.core`      pure: fingerprints, matchers, silences, the engine (``for``,
  firing, resolve, inhibition, silences, ack), the grouper (group_wait / group_interval /
  repeat_interval), the alert JSON, the webhook payload and the actions an alert starts
- :mod:`soads.alerts.delivery`  HTTP out: Prometheus Alertmanager's ``/api/v2/alerts`` and
  webhooks with retry and backoff (stdlib only)
"""
