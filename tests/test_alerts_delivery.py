"""soads.alerts.delivery against the real parts: the Prometheus Alertmanager ``make up`` starts
(the ``alertmanager`` fixture: under CI=true a missing one fails) and a real HTTP receiver on
127.0.0.1 in a thread of the test."""
import json
import logging
import socket
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from soads.alerts import delivery
from soads.alerts.delivery import ApiResult, DeliveryResult


def prometheus_fingerprint(labels):
    """Prometheus' ``model.LabelSet.Fingerprint()``, written out here: FNV-1a 64 over the labels
    sorted by name, each as name, 0xff, value, 0xff; 16 lowercase hex digits."""
    h = 0xCBF29CE484222325
    for name in sorted(labels):
        for byte in name.encode() + b"\xff" + labels[name].encode() + b"\xff":
            h = ((h ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


def test_the_fingerprint_of_the_test_is_prometheus_own():
    # the empty set is FNV-1a's offset basis (Prometheus' emptyLabelSignature); the 0xff
    # separators keep {"a": "b"} apart from {"ab": ""}; the tests below compare with Alertmanager
    assert prometheus_fingerprint({}) == "cbf29ce484222325"
    assert prometheus_fingerprint({"a": "b"}) != prometheus_fingerprint({"ab": ""})


def _rfc3339(dt):
    return dt.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _time(text):
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------- Alertmanager

@pytest.fixture()
def run_label(alertmanager):
    """A label value private to this test; its alerts are resolved afterwards."""
    run = uuid.uuid4().hex[:12]
    yield run
    got = delivery.get_alerts(alertmanager, filters={"test_run": run})
    if got.ok and got.data:
        past = _rfc3339(datetime.now(timezone.utc) - timedelta(seconds=1))
        delivery.post_alerts(alertmanager, [
            {"labels": a["labels"], "startsAt": a["startsAt"], "endsAt": past} for a in got.data])


def _alert(run, oid, severity, starts):
    return {"labels": {"alertname": "SoadsTestVerdict", "severity": severity, "line": "L1",
                       "read_point": "urn:epc:id:sgln:0614141.00001.0", "oid": oid,
                       "test_run": run},
            "annotations": {"summary": f"object {oid} took an unexpected path",
                            "explanation": json.dumps({"score": 0.91})},
            "startsAt": _rfc3339(starts), "endsAt": delivery.ZERO_TIME,
            "generatorURL": "http://127.0.0.1/soads/alerts", "fingerprint": "ignored",
            "status": "firing"}


def _listed(base, run, **flags):
    got = delivery.get_alerts(base, filters={"test_run": run}, **flags)
    assert got.ok, got.error
    return sorted(got.data, key=lambda a: a["labels"]["oid"])


@pytest.mark.integration
def test_two_alerts_posted_are_read_back_with_prometheus_fingerprints(alertmanager, run_label):
    starts = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(minutes=1)
    sent = [_alert(run_label, "urn:epc:id:sgtin:0614141.107346.1", "warning", starts),
            _alert(run_label, "urn:epc:id:sgtin:0614141.107346.2", "critical", starts)]
    res = delivery.post_alerts(alertmanager, sent)
    assert (res.ok, res.http_status, res.error) == (True, 200, None)
    assert res.url == f"{alertmanager}/api/v2/alerts" and res.method == "POST"

    got = _listed(alertmanager, run_label)
    assert [a["labels"] for a in got] == [a["labels"] for a in sent]
    assert [a["annotations"] for a in got] == [a["annotations"] for a in sent]
    for a in got:
        assert a["fingerprint"] == prometheus_fingerprint(a["labels"])
        assert len(a["fingerprint"]) == 16
        assert _time(a["startsAt"]) == starts
        assert a["generatorURL"] == "http://127.0.0.1/soads/alerts"
        assert a["status"]["state"] == "active"
        assert a["receivers"] == [{"name": "default"}]
        # no endsAt posted: Alertmanager ends it after its resolve_timeout (5 minutes)
        assert timedelta(minutes=4) < _time(a["endsAt"]) - datetime.now(timezone.utc) \
            <= timedelta(minutes=5)
    # a matcher string filters like the dict form
    one = delivery.get_alerts(alertmanager, filters=[f'test_run="{run_label}"',
                                                     'severity=~"crit.*"'])
    assert [a["labels"]["severity"] for a in one.data] == ["critical"]
    # not active: none of them (they are neither silenced nor inhibited)
    assert _listed(alertmanager, run_label, active=False) == []


@pytest.mark.integration
def test_the_same_alert_posted_again_stays_one_then_resolves(alertmanager, run_label):
    starts = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(minutes=2)
    first = _alert(run_label, "urn:epc:id:sgtin:0614141.107346.3", "warning", starts)
    assert delivery.post_alerts(alertmanager, [first]).ok
    # the same labels again, a minute later and with another summary: one alert (one
    # fingerprint), its first start kept, its annotations refreshed
    again = {**first, "startsAt": _rfc3339(starts + timedelta(minutes=1)),
             "annotations": {"summary": "still on the wrong path"}}
    assert delivery.post_alerts(alertmanager, [again, again]).ok
    got = _listed(alertmanager, run_label)
    assert len(got) == 1
    assert got[0]["fingerprint"] == prometheus_fingerprint(first["labels"])
    assert _time(got[0]["startsAt"]) == starts
    assert got[0]["annotations"] == {"summary": "still on the wrong path"}

    # an endsAt in the past resolves it: no longer listed, in any state
    ends = datetime.now(timezone.utc) - timedelta(seconds=1)
    res = delivery.post_alerts(alertmanager, [{**first, "endsAt": ends}])  # a datetime is fine
    assert res.ok, res.error
    assert _listed(alertmanager, run_label) == []
    assert _listed(alertmanager, run_label, active=False) == []


@pytest.mark.integration
def test_alertmanager_status_and_its_refusals(alertmanager, run_label):
    st = delivery.get_status(alertmanager)
    assert st.ok and st.http_status == 200, st.error
    assert st.data["cluster"]["status"] == "disabled"  # one node, no gossip port
    assert st.data["versionInfo"]["version"].split(".")[0].isdigit()
    assert "receiver: default" in st.data["config"]["original"]

    # Alertmanager's own 400: the end before the start; the error names the URL and status
    starts = datetime.now(timezone.utc)
    bad = {**_alert(run_label, "x", "info", starts),
           "endsAt": _rfc3339(starts - timedelta(hours=1))}
    res = delivery.post_alerts(alertmanager, [bad])
    assert (res.ok, res.http_status) == (False, 400)
    assert res.error.startswith(f"POST {alertmanager}/api/v2/alerts: HTTP 400 Bad Request")
    assert "start time must be before end time" in res.error and "\n" not in res.error
    # a bad matcher: 400 as well
    res = delivery.get_alerts(alertmanager, filters=["not a matcher"])
    assert (res.ok, res.http_status) == (False, 400) and "HTTP 400" in res.error


def test_an_unreachable_alertmanager_is_a_result_not_a_crash():
    base = f"http://127.0.0.1:{_free_port()}"
    for res in (delivery.post_alerts(base, [{"labels": {"alertname": "A"}}], timeout=2),
                delivery.get_alerts(base, timeout=2), delivery.get_status(base, timeout=2)):
        assert isinstance(res, ApiResult)
        assert (res.ok, res.http_status, res.data) == (False, None, None)
        assert res.error.startswith(f"{res.method} {base}/api/v2/")
        assert "Connection refused" in res.error
    # naive times are refused before sending
    res = delivery.post_alerts(base, [{"labels": {"alertname": "A"}, "startsAt": datetime.now()}])
    assert res.http_status is None and "alert 0: naive datetime" in res.error


# --------------------------------------------------------------------------- webhooks

class Receiver:
    """A real HTTP server on 127.0.0.1 (port 0) answering POSTs with ``answers`` in turn (the
    last one repeats); ``"slow"`` answers 200 after 0.5 s. Records every request."""

    def __init__(self, answers):
        self.answers, self.requests = list(answers), []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append((dict(self.headers), json.loads(body)))
                i = len(receiver.requests) - 1
                answer = receiver.answers[min(i, len(receiver.answers) - 1)]
                if answer == "slow":
                    time.sleep(0.5)
                    answer = 200
                try:
                    self.send_response(answer)
                    if answer == 429:
                        self.send_header("Retry-After", "0")
                    self.send_header("Content-Type", "application/json")
                    self.end_headers()
                    self.wfile.write(b'{"status": "%d"}' % answer)
                except OSError:  # the client gave up (timed out) meanwhile
                    pass

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True  # closing does not wait for a "slow" answer
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,),
                                       daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


PAYLOAD = {"version": "4", "groupKey": "{}:{alertname=\"SoadsTestVerdict\"}",
           "truncatedAlerts": 0, "status": "firing", "receiver": "soads",
           "groupLabels": {"alertname": "SoadsTestVerdict"},
           "commonLabels": {"alertname": "SoadsTestVerdict", "severity": "critical"},
           "commonAnnotations": {}, "externalURL": "http://127.0.0.1",
           "alerts": [{"status": "firing", "labels": {"alertname": "SoadsTestVerdict",
                                                      "severity": "critical", "oid": "o-1"},
                       "annotations": {"summary": "o-1 took an unexpected path"},
                       "startsAt": "2026-01-02T03:04:05Z", "endsAt": delivery.ZERO_TIME,
                       "generatorURL": "", "fingerprint": "0123456789abcdef"}]}
FAST = dict(backoff_seconds=0.05, max_backoff=1.0, timeout=2.0)


def test_a_webhook_answering_500_twice_is_delivered_at_the_third_attempt(caplog):
    with Receiver([500, 500, 200]) as rx, \
            caplog.at_level(logging.INFO, logger="soads.alerts.delivery"):
        res = delivery.send_webhook(rx.url, PAYLOAD, retries=3,
                                    headers={"Idempotency-Key": "notification-42"}, **FAST)
    assert isinstance(res, DeliveryResult)
    assert (res.status, res.delivered, res.attempts, res.http_status, res.error) == (
        "delivered", True, 3, 200, None)
    err = f'POST {rx.url}: HTTP 500 Internal Server Error: {{"status": "500"}}'
    assert res.errors == (err, err)
    assert res.elapsed >= 0.05 + 0.1  # backoff 0.05 s, then 0.1 s
    # the same body and key every time; JSON as the receiver parsed it
    assert [body for _, body in rx.requests] == [PAYLOAD] * 3
    assert {h["Idempotency-Key"] for h, _ in rx.requests} == {"notification-42"}
    assert {h["Content-Type"] for h, _ in rx.requests} == {"application/json"}
    # every attempt logged
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3
    assert "attempt 1/4" in lines[0] and "retrying in 0.05s" in lines[0]
    assert "attempt 2/4" in lines[1] and "retrying in 0.10s" in lines[1]
    assert "delivered (HTTP 200) at attempt 3/4" in lines[2]


def test_a_webhook_answering_400_fails_at_once():
    with Receiver([400]) as rx:
        res = delivery.send_webhook(rx.url, PAYLOAD, retries=3, **FAST)
    assert (res.status, res.attempts, res.http_status) == ("failed", 1, 400)
    assert res.error.startswith(f"POST {rx.url}: HTTP 400 Bad Request")
    assert res.errors == (res.error,) and len(rx.requests) == 1


def test_a_refused_webhook_fails_after_its_retries_with_the_error_recorded(caplog):
    url = f"http://127.0.0.1:{_free_port()}/hook"
    with caplog.at_level(logging.WARNING, logger="soads.alerts.delivery"):
        res = delivery.send_webhook(url, PAYLOAD, retries=2, **FAST)
    assert (res.status, res.delivered, res.attempts, res.http_status) == ("failed", False, 3, None)
    assert res.error.startswith(f"POST {url}: ") and "Connection refused" in res.error
    assert len(res.errors) == 3 and res.errors[-1] == res.error
    assert 0.15 <= res.elapsed < 2.0  # 0.05 + 0.1 s of backoff
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3 and lines[-1].endswith("(gives up)")


def test_a_webhook_retries_408_429_and_timeouts_but_not_redirects():
    with Receiver([429, 408, 200]) as rx:
        res = delivery.send_webhook(rx.url, PAYLOAD, retries=3, **FAST)
    assert (res.status, res.attempts) == ("delivered", 3)
    assert [e.split(": ")[1] for e in res.errors] == ["HTTP 429 Too Many Requests",
                                                      "HTTP 408 Request Timeout"]
    with Receiver(["slow", 200]) as rx:
        res = delivery.send_webhook(rx.url, PAYLOAD, retries=1, backoff_seconds=0.05,
                                    timeout=0.2)
    assert (res.status, res.attempts) == ("delivered", 2)
    assert res.errors == (f"POST {rx.url}: timed out after 0.2s",)
    with Receiver([302]) as rx:  # a redirected POST would become a GET: not followed
        res = delivery.send_webhook(rx.url, PAYLOAD, retries=3, **FAST)
    assert (res.status, res.attempts, res.http_status) == ("failed", 1, 302)


def test_a_webhook_that_cannot_be_sent_is_a_failure_not_an_exception():
    res = delivery.send_webhook("http://127.0.0.1:9/hook", {"when": datetime.now()}, **FAST)
    assert (res.status, res.attempts) == ("failed", 0)
    assert "the payload is not JSON" in res.error
    res = delivery.send_webhook("no-scheme/hook", PAYLOAD, retries=3, **FAST)
    assert (res.status, res.attempts) == ("failed", 1) and "bad URL" in res.error
