"""HTTP delivery of alerts and actions: Prometheus Alertmanager's API v2 and webhooks.

Standard library only (urllib, json); a client, it binds nothing.

- :func:`post_alerts`, :func:`get_alerts`, :func:`get_status`: Alertmanager's
  ``/api/v2/alerts`` and ``/api/v2/status``. One request each, no retry (the caller keeps the
  alert in its table and posts again on its next pass); the outcome is an :class:`ApiResult`.
- :func:`send_webhook`: one JSON POST with retries and exponential backoff; the outcome is a
  :class:`DeliveryResult` for the caller to record.

Nothing here raises on a network or HTTP failure (a refused connection, a timeout, a 500): the
result says what failed in one line naming the method, the URL and the HTTP status or the
reason. Every webhook attempt is logged.

Retry rule of :func:`send_webhook`: 2xx is delivered; 5xx, 408, 429, a timeout, a refused or
reset connection are retried after ``backoff_seconds * 2**(attempt - 1)`` seconds (at most
``max_backoff``; a longer ``Retry-After`` in seconds is honoured up to ``max_backoff``); any
other answer (a 4xx, a redirect) or a bad URL fails at once: sending it again would not help.
"""
from __future__ import annotations

import http.client
import json
import logging
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Iterable, Mapping, Sequence

logger = logging.getLogger(__name__)

ZERO_TIME = "0001-01-01T00:00:00Z"
"""``endsAt`` of an alert with no end yet (Go's zero time, as Alertmanager writes it)."""
POST_KEYS = ("labels", "annotations", "startsAt", "endsAt", "generatorURL")
"""The fields of an alert that ``POST /api/v2/alerts`` takes (``postableAlert``)."""
RETRY_STATUS = frozenset({408, 429})
"""HTTP statuses below 500 that are worth retrying (request timeout, too many requests)."""
USER_AGENT = "soads-alerts/0.1"
_SNIPPET = 200  # characters of a response body quoted in an error


@dataclass(frozen=True)
class ApiResult:
    """The outcome of one Alertmanager API request.

    ``ok``: a 2xx answer (and, for a GET, a JSON body); ``data``: that body parsed (None for a
    POST); ``error``: one line naming the method, the URL and the HTTP status or the reason,
    None when ``ok``; ``http_status``: None when no answer came (refused, timed out).
    """
    ok: bool
    method: str
    url: str
    http_status: int | None
    data: Any = None
    error: str | None = None
    elapsed: float = 0.0


@dataclass(frozen=True)
class DeliveryResult:
    """The outcome of :func:`send_webhook`, for the caller to record.

    ``status``: ``"delivered"`` or ``"failed"``; ``attempts``: requests made (0 when the payload
    could not be sent at all); ``http_status``: of the last answer, None when the last attempt
    got none; ``error``: the last attempt's failure in one line, None when delivered;
    ``errors``: every failed attempt's line, in order (a delivery after retries keeps them);
    ``elapsed``: seconds, backoff included.
    """
    status: str
    url: str
    attempts: int
    http_status: int | None
    error: str | None
    elapsed: float
    errors: tuple[str, ...] = ()

    @property
    def delivered(self) -> bool:
        return self.status == "delivered"


@dataclass(frozen=True)
class _Reply:
    status: int | None
    body: bytes
    headers: Mapping[str, str]
    error: str | None  # None on a 2xx
    retryable: bool


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect is an answer, not followed: urllib would turn a redirected POST into a GET."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: D102
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)


def _one_line(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _SNIPPET else text[:_SNIPPET] + "..."


def _request(method: str, url: str, body: bytes | None, headers: Mapping[str, str],
             timeout: float) -> _Reply:
    """One HTTP request; never raises for the network or the answer."""
    where = f"{method} {url}"
    try:
        req = urllib.request.Request(url, data=body, method=method,
                                     headers={"User-Agent": USER_AGENT, **headers})
    except ValueError as e:  # no scheme, bad host: a setting to fix, not a moment to wait
        return _Reply(None, b"", {}, f"{where}: bad URL ({e})", False)
    try:
        with _OPENER.open(req, timeout=timeout) as resp:
            return _Reply(resp.status, resp.read(), resp.headers, None, False)
    except urllib.error.HTTPError as e:
        try:
            text = e.read().decode("utf-8", "replace")
        except (OSError, http.client.HTTPException):
            text = ""
        line = f"{where}: HTTP {e.code} {e.reason}"
        if text.strip():
            line += f": {_one_line(text)}"
        return _Reply(e.code, b"", e.headers or {}, line,
                      e.code >= 500 or e.code in RETRY_STATUS)
    except urllib.error.URLError as e:
        reason = e.reason
        if isinstance(reason, TimeoutError):
            return _Reply(None, b"", {}, f"{where}: timed out after {timeout:g}s", True)
        if isinstance(reason, str) and "unknown url type" in reason:
            return _Reply(None, b"", {}, f"{where}: bad URL ({reason})", False)
        return _Reply(None, b"", {}, f"{where}: {reason}", True)
    except TimeoutError:  # the answer's read timed out (connect timeouts come as URLError)
        return _Reply(None, b"", {}, f"{where}: timed out after {timeout:g}s", True)
    except (http.client.HTTPException, OSError) as e:  # reset, closed without an answer
        return _Reply(None, b"", {}, f"{where}: {type(e).__name__}: {e}", True)


# --------------------------------------------------------------------------------------------
# Prometheus Alertmanager, API v2

def _rfc3339(value: Any) -> Any:
    """An aware datetime as RFC 3339 in UTC with ``Z``; anything else unchanged."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: alert times are aware UTC datetimes")
        return value.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")
    return value


def postable(alert: Mapping[str, Any]) -> dict:
    """The ``postableAlert`` of an alert as JSON (:func:`soads.alerts.core.alert_json`, or a
    plain dict): only :data:`POST_KEYS`, times as RFC 3339, no ``endsAt`` while it is
    :data:`ZERO_TIME` (Alertmanager then ends it after its ``resolve_timeout`` unless posted
    again), no empty ``generatorURL``. Raises ValueError when the labels are missing or not
    strings.

    >>> postable({"labels": {"alertname": "A"}, "startsAt": "2026-01-02T03:04:05Z",
    ...           "endsAt": ZERO_TIME, "fingerprint": "x", "status": "firing"})
    {'labels': {'alertname': 'A'}, 'startsAt': '2026-01-02T03:04:05Z'}
    """
    labels = alert.get("labels")
    if not isinstance(labels, Mapping) or not labels:
        raise ValueError("labels must be a non-empty dict of strings")
    bad = [k for k, v in labels.items() if not (isinstance(k, str) and isinstance(v, str))]
    if bad:
        raise ValueError(f"label {bad[0]!r} is not a string pair")
    out = {k: _rfc3339(alert[k]) for k in POST_KEYS if alert.get(k) not in (None, "")}
    if out.get("endsAt") == ZERO_TIME:
        del out["endsAt"]
    return out


def _api(base_url: str, path: str) -> str:
    return base_url.rstrip("/") + path


def _finish(method: str, url: str, reply: _Reply, t0: float, parse: bool) -> ApiResult:
    elapsed = time.monotonic() - t0
    if reply.error is not None:
        return ApiResult(False, method, url, reply.status, error=reply.error, elapsed=elapsed)
    data = None
    if parse:
        try:
            data = json.loads(reply.body)
        except ValueError as e:
            return ApiResult(False, method, url, reply.status, elapsed=elapsed,
                             error=f"{method} {url}: HTTP {reply.status} but the body is not "
                                   f"JSON ({e})")
    return ApiResult(True, method, url, reply.status, data=data, elapsed=elapsed)


def post_alerts(base_url: str, alerts: Sequence[Mapping[str, Any]],
                timeout: float = 5.0) -> ApiResult:
    """``POST {base_url}/api/v2/alerts`` with ``alerts`` (each made :func:`postable`).

    Alertmanager keeps one alert per label set (its fingerprint): posting the same labels again
    refreshes that alert, and an ``endsAt`` in the past resolves it. A malformed alert is
    refused before anything is sent (``http_status`` None, the error names its index).

    >>> r = post_alerts("http://127.0.0.1:9", [{"labels": {"alertname": "A"}}, {"labels": {}}])
    >>> r.ok, r.http_status, r.error.split(": ", 1)[1]
    (False, None, 'alert 1: labels must be a non-empty dict of strings')
    """
    url = _api(base_url, "/api/v2/alerts")
    t0 = time.monotonic()
    body = []
    for i, alert in enumerate(alerts):
        try:
            body.append(postable(alert))
        except (ValueError, AttributeError) as e:
            return ApiResult(False, "POST", url, None, error=f"POST {url}: alert {i}: {e}")
    reply = _request("POST", url, json.dumps(body).encode(),
                     {"Content-Type": "application/json"}, timeout)
    return _finish("POST", url, reply, t0, parse=False)


def get_alerts(base_url: str, *, filters: Mapping[str, str] | Iterable[str] = (),
               active: bool = True, silenced: bool = True, inhibited: bool = True,
               unprocessed: bool = True, receiver: str | None = None,
               timeout: float = 5.0) -> ApiResult:
    """``GET {base_url}/api/v2/alerts``: ``data`` is the list of Alertmanager's alerts (each
    with ``labels``, ``annotations``, ``startsAt``, ``endsAt``, ``updatedAt``, ``fingerprint``,
    ``status: {state, silencedBy, inhibitedBy}``, ``receivers``).

    ``filters``: a dict of label -> value (equality matchers), or matcher strings in
    Alertmanager's syntax (``'severity=~"warning|critical"'``). ``active``, ``silenced``,
    ``inhibited``, ``unprocessed``: include alerts in that state. A resolved alert is in none
    of them.
    """
    if isinstance(filters, Mapping):
        matchers = [f"{k}={json.dumps(v)}" for k, v in filters.items()]
    else:
        matchers = list(filters)
    query = [("filter", m) for m in matchers] + [
        (name, "true" if flag else "false") for name, flag in
        (("active", active), ("silenced", silenced), ("inhibited", inhibited),
         ("unprocessed", unprocessed))]
    if receiver:
        query.append(("receiver", receiver))
    url = _api(base_url, "/api/v2/alerts") + "?" + urllib.parse.urlencode(query)
    t0 = time.monotonic()
    reply = _request("GET", url, None, {"Accept": "application/json"}, timeout)
    return _finish("GET", url, reply, t0, parse=True)


def get_status(base_url: str, timeout: float = 5.0) -> ApiResult:
    """``GET {base_url}/api/v2/status``: ``data`` has ``versionInfo``, ``uptime``, ``cluster``
    and ``config.original`` (the YAML it runs)."""
    url = _api(base_url, "/api/v2/status")
    t0 = time.monotonic()
    reply = _request("GET", url, None, {"Accept": "application/json"}, timeout)
    return _finish("GET", url, reply, t0, parse=True)


# --------------------------------------------------------------------------------------------
# webhooks

def _retry_after(headers: Mapping[str, str]) -> float | None:
    value = headers.get("Retry-After") if headers else None
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:  # an HTTP date: the exponential backoff stands
        return None


def send_webhook(url: str, payload: Mapping[str, Any], *, retries: int = 3,
                 backoff_seconds: float = 0.5, max_backoff: float = 30.0, timeout: float = 5.0,
                 headers: Mapping[str, str] | None = None) -> DeliveryResult:
    """POST ``payload`` as JSON to ``url``, retrying failures that may pass (see the module
    docstring): at most ``retries + 1`` attempts, ``backoff_seconds * 2**(attempt - 1)``
    seconds apart (capped at ``max_backoff``). ``headers`` are added to the request (e.g.
    ``{"Idempotency-Key": notification_id}`` so a receiver can drop a repeat).

    Never raises for the network, the answer or a payload that is not JSON: the returned
    :class:`DeliveryResult` says what happened, and the caller records it.
    """
    if retries < 0 or backoff_seconds < 0 or max_backoff < 0:
        raise ValueError("retries, backoff_seconds and max_backoff must be >= 0")
    t0 = time.monotonic()
    try:
        body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    except (TypeError, ValueError) as e:
        error = f"POST {url}: the payload is not JSON ({e})"
        logger.error("webhook %s", error)
        return DeliveryResult("failed", url, 0, None, error, time.monotonic() - t0, (error,))
    send_headers = {"Content-Type": "application/json", **(headers or {})}
    errors: list[str] = []
    total = retries + 1
    for attempt in range(1, total + 1):
        reply = _request("POST", url, body, send_headers, timeout)
        if reply.error is None:
            elapsed = time.monotonic() - t0
            logger.info("webhook POST %s: delivered (HTTP %s) at attempt %d/%d after %.2fs",
                        url, reply.status, attempt, total, elapsed)
            return DeliveryResult("delivered", url, attempt, reply.status, None, elapsed,
                                  tuple(errors))
        errors.append(reply.error)
        if not reply.retryable or attempt == total:
            why = "gives up" if reply.retryable else "not retried"
            logger.warning("webhook attempt %d/%d: %s (%s)", attempt, total, reply.error, why)
            break
        delay = min(max_backoff, backoff_seconds * 2 ** (attempt - 1))
        after = _retry_after(reply.headers)
        if after is not None:
            delay = min(max_backoff, max(delay, after))
        logger.warning("webhook attempt %d/%d: %s; retrying in %.2fs", attempt, total,
                       reply.error, delay)
        time.sleep(delay)
    return DeliveryResult("failed", url, attempt, reply.status, reply.error,
                          time.monotonic() - t0, tuple(errors))
