"""The deploy/ monitoring files against a real Prometheus scraping a real worker.

Prometheus comes from Debian's package (``deploy/install-prometheus.sh`` installs it when
missing), listens on 127.0.0.1 only, keeps its data in a temp dir, scrapes every second and
is killed at teardown. Clicks flow through the real broker; the test asks Prometheus's HTTP
API for the series and checks the values the clicks imply.
"""

from __future__ import annotations

import json
import random
import re
import subprocess
import time
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from streams.local import LocalStack, free_port, http_get
from streams.produce import make_producer

pytestmark = pytest.mark.broker

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
RULES = DEPLOY / "prometheus" / "alerts.yml"
DASHBOARD = DEPLOY / "grafana" / "sessionrec-dashboard.json"


@pytest.fixture(scope="module")
def prom_bin() -> Path:
    """Directory holding prometheus and promtool, installed from Debian if missing."""
    r = subprocess.run(["bash", str(DEPLOY / "install-prometheus.sh")], capture_output=True,
                       text=True, timeout=900)
    assert r.returncode == 0, r.stdout + r.stderr
    return Path(r.stdout.strip().splitlines()[-1])


def test_promtool_accepts_config_rules_and_rule_tests(prom_bin: Path) -> None:
    promtool = str(prom_bin / "promtool")
    for args in (["check", "config", str(DEPLOY / "prometheus" / "prometheus.yml")],
                 ["check", "rules", str(RULES)],
                 ["test", "rules", str(DEPLOY / "prometheus" / "alerts_test.yml")]):
        r = subprocess.run([promtool, *args], capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, f"promtool {' '.join(args)}:\n{r.stdout}{r.stderr}"


@contextmanager
def prometheus(prom_bin: Path, workdir: Path, targets: list[str]) -> Iterator[str]:
    """A Prometheus on a free loopback port scraping ``targets`` every second, with the
    project's alert rules loaded; yields its base URL and kills it on exit."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = {  # JSON is YAML: no YAML library needed to write it
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [{"job_name": "sessionrec", "static_configs": [{"targets": targets}]}],
    }
    (workdir / "prometheus.yml").write_text(json.dumps(config))
    log = open(workdir / "prometheus.log", "wb")  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen(
        [str(prom_bin / "prometheus"), f"--config.file={workdir / 'prometheus.yml'}",
         f"--storage.tsdb.path={workdir / 'data'}", f"--web.listen-address=127.0.0.1:{port}",
         "--storage.tsdb.retention.time=1h", "--log.level=warn"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, (workdir / "prometheus.log").read_text()
            try:
                if http_get(url + "/-/ready")[0] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "prometheus not ready after 60 s"
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def api(url: str, path: str, **params: str) -> object:
    status, body = http_get(f"{url}/api/v1/{path}?{urllib.parse.urlencode(params)}", timeout=5)
    d = json.loads(body)
    assert status == 200 and d["status"] == "success", (params, d)
    return d["data"]


def query(url: str, expr: str) -> list[dict[str, Any]]:
    data = api(url, "query", query=expr)
    assert isinstance(data, dict)
    result = data["result"]
    assert isinstance(result, list)
    return result


def scalar(url: str, expr: str) -> float | None:
    res = query(url, expr)
    assert len(res) <= 1, (expr, res)
    return float(res[0]["value"][1]) if res else None


def wait_for(url: str, expr: str, ok: Callable[[float | None], bool],
             timeout: float = 90.0) -> float | None:
    """Poll ``expr`` until ``ok`` holds for its value; fails with the last value seen."""
    deadline = time.monotonic() + timeout
    while True:
        v = scalar(url, expr)
        if ok(v):
            return v
        if time.monotonic() > deadline:
            pytest.fail(f"{expr} = {v} after {timeout:.0f} s")
        time.sleep(0.5)


def make_clicks(rng: random.Random, visitors: int, now: float) -> list[dict[str, Any]]:
    """One open session per visitor, recent event times, items walking a ring (learnable)."""
    clicks: list[dict[str, Any]] = []
    for v in range(visitors):
        t = now - 900 + rng.random() * 300
        item = rng.randrange(40)
        for j in range(rng.randint(3, 8)):
            clicks.append({"visitor_id": f"visitor-{v}", "item_id": f"item-{item}",
                           "ts": round(t, 3), "event_id": f"v{v}-c{j}"})
            item = (item + 1) % 40 if rng.random() < 0.8 else rng.randrange(40)
            t += rng.uniform(5, 30)
    clicks.sort(key=lambda c: c["ts"])
    return clicks


def test_prometheus_scrapes_the_worker_while_clicks_flow(
        stack: LocalStack, prom_bin: Path, tmp_path: Path) -> None:
    worker = stack.start_worker("prom")
    with prometheus(prom_bin, tmp_path / "prom", [f"127.0.0.1:{worker.web_port}"]) as url:
        worker.wait_ready(timeout=180)
        wait_for(url, 'sessionrec_ready{job="sessionrec"}', lambda v: v == 1)
        assert scalar(url, 'up{job="sessionrec"}') == 1

        rng = random.Random(17)
        visitors = 30
        clicks = make_clicks(rng, visitors, time.time())
        producer = make_producer(stack.address)
        duplicates = 0
        for n, c in enumerate(clicks):
            body = json.dumps(c).encode()
            producer.send("clicks", key=c["visitor_id"].encode(), value=body)
            if n % 40 == 5:  # a producer retry: the same event again
                producer.send("clicks", key=c["visitor_id"].encode(), value=body)
                duplicates += 1
        broken = 4
        for i in range(broken):
            producer.send("clicks", key=b"visitor-0", value=b'{"visitor_id": "visitor-0", ' +
                          str(i).encode())
        producer.flush()
        producer.close()

        accepted = len(clicks)
        wait_for(url, 'sessionrec_clicks_total{outcome="accepted"}', lambda v: v == accepted)
        assert scalar(url, 'sessionrec_clicks_total{outcome="duplicate"}') == duplicates
        wait_for(url, 'sessionrec_clicks_total{outcome="invalid_json"}', lambda v: v == broken)
        assert scalar(url, 'sum(sessionrec_clicks_total{outcome="missing_field"})') == 0
        # One suggestion per accepted click, each timed from arrival and from event time.
        for expr in ('sum(sessionrec_recommendations_total)',
                     'sessionrec_recommendation_latency_seconds_count',
                     'sessionrec_event_to_recommendation_seconds_count'):
            wait_for(url, expr, lambda v: v == accepted)
        p99 = scalar(url, 'histogram_quantile(0.99, sum by (le) '
                          '(rate(sessionrec_recommendation_latency_seconds_bucket[1m])))')
        assert p99 is not None and p99 >= 0
        # Event times are 10-15 minutes old: every one lands in the top buckets.
        assert scalar(url, 'sessionrec_event_to_recommendation_seconds_bucket{le="300.0"}') == 0
        # Every visitor has one open session; none closed.
        wait_for(url, 'sessionrec_live_sessions', lambda v: v == visitors)
        assert scalar(url, 'sum(sessionrec_sessions_closed_total)') == 0
        # Every click after a session's first judges the list shown after the one before.
        wait_for(url, 'sessionrec_online_judged_total', lambda v: v == accepted - visitors)
        for k in ("10", "20"):
            hr = scalar(url, f'sessionrec_online_hit_rate{{k="{k}"}}')
            mrr = scalar(url, f'sessionrec_online_mrr{{k="{k}"}}')
            assert hr is not None and 0 <= hr <= 1
            assert mrr is not None and 0 <= mrr <= hr
        # The model and index saw the catalogue the clicks used.
        items = len({c["item_id"] for c in clicks})
        wait_for(url, 'sessionrec_vocabulary_items', lambda v: v == items)
        wait_for(url, 'sessionrec_index_items', lambda v: v is not None and 0 < v <= items)
        assert (scalar(url, 'sessionrec_index_refresh_seconds_count') or 0) > 0
        # One lag series per clicks partition this worker holds, all caught up.
        partitions = stack.settings().partitions
        wait_for(url, 'count(sessionrec_consumer_lag{topic="clicks"})', lambda v: v == partitions)
        wait_for(url, 'sum(sessionrec_consumer_lag{topic="clicks"})', lambda v: v == 0)
        assert scalar(url, 'count(sessionrec_build_info == 1)') == 1

        check_rules_loaded(url)
        check_dashboard_queries(url)


def check_rules_loaded(url: str) -> None:
    """Every rule of alerts.yml evaluates without error in the real server."""
    names = set(re.findall(r"^\s*- (?:alert|record): (\S+)", RULES.read_text(), re.M))
    deadline = time.monotonic() + 30
    while True:
        data = api(url, "rules")
        assert isinstance(data, dict)
        rules = {r["name"]: r for g in data["groups"] for r in g["rules"]}
        if set(rules) >= names and all(rules[n]["health"] == "ok" for n in names):
            break
        assert time.monotonic() < deadline, {n: rules.get(n, {}).get("lastError") for n in names}
        time.sleep(0.5)
    # With clicks flowing and the worker up, none of the paging alerts may stay pending. One
    # may flicker: a scrape that misses the 1 s timeout on a loaded machine marks the worker's
    # series stale (up == 0, the clicks counter absent) until the next scrape. So wait for
    # them to clear; a rule that is wrong stays pending and fails here.
    paging = {"SessionrecWorkerDown", "SessionrecWorkerNotReady", "SessionrecNoClicks",
              "SessionrecIndexStale"}
    deadline = time.monotonic() + 30
    while True:
        active = {a["labels"]["alertname"]
                  for a in api(url, "alerts")["alerts"]}  # type: ignore[index]
        if not active & paging:
            break
        assert time.monotonic() < deadline, (active, "lowest up in 5m:",
                                             scalar(url, 'min_over_time(up[5m])'))
        time.sleep(0.5)


def check_dashboard_queries(url: str) -> None:
    """Each dashboard query runs in Prometheus, and each metric it names exists."""
    dash = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    assert exprs
    for expr in exprs:
        concrete = (expr.replace("$job", "sessionrec").replace("$instance", ".*")
                    .replace("$__rate_interval", "1m").replace("$__range", "5m"))
        query(url, concrete)
    names = set(re.findall(r"\b(sessionrec_[a-z0-9_]+)", " ".join(exprs) + RULES.read_text()))
    missing = [n for n in sorted(names) if not query(url, f'count({{__name__="{n}"}})')]
    assert not missing, missing
