"""The `sessionrec` commands a person runs, as child processes, on the real broker."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from streams.broker import port_open
from streams.local import LocalStack, free_port
from streams.produce import read_clicks
from streams.watch import read_records

pytestmark = pytest.mark.broker


def run(args: list[str], env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "streams.cli", *args], env={**os.environ, **env},
                          capture_output=True, text=True, timeout=timeout)


def test_broker_command_starts_tansu_and_returns(tmp_path: Path) -> None:
    port = free_port()
    env = {"SESSIONREC_BROKER": f"kafka://127.0.0.1:{port}", "SESSIONREC_DATA_DIR": str(tmp_path)}
    r = run(["broker"], env, timeout=120)
    try:
        assert r.returncode == 0, r.stderr
        assert f"ready on 127.0.0.1:{port}" in r.stdout
        assert port_open(f"127.0.0.1:{port}")
        again = run(["broker"], env, timeout=60)  # a second call finds it running
        assert again.returncode == 0 and "already listens" in again.stdout
    finally:
        pid = int((tmp_path / "broker.pid").read_text())
        os.killpg(pid, signal.SIGTERM)


def test_produce_replays_files_in_time_order(stack: LocalStack, tmp_path: Path) -> None:
    tsv = tmp_path / "c.tsv"
    tsv.write_text("SessionId\tItemId\tTime\n2\tb\t1400000100.5\n1\ta\t1400000000.0\n")
    csv = tmp_path / "c.csv"
    csv.write_text("user,sku,when\nu1,x,1400000300\nu2,y,1400000200\n")
    jsonl = tmp_path / "c.jsonl"
    jsonl.write_text(json.dumps({"visitor_id": "j", "item_id": "z", "ts": 1400000400.0,
                                 "event_id": "j-1"}) + "\n")
    assert [c.visitor_id for c in read_clicks(tsv)] == ["1", "2"]
    assert [c.item_id for c in read_clicks(csv, columns="visitor_id=user,item_id=sku,ts=when")] \
        == ["y", "x"]
    env = {"SESSIONREC_BROKER": f"kafka://{stack.address}"}
    topic = "replay-check"
    for args in (["produce", str(tsv)], ["produce", str(csv), "--columns",
                                         "visitor_id=user,item_id=sku,ts=when"],
                 ["produce", str(jsonl), "--rate", "100"],
                 ["produce", "--synthetic", "--clicks", "50", "--items", "20"]):
        r = run([*args, "--topic", topic, "--no-progress"], env)
        assert r.returncode == 0, r.stderr
        assert r.stdout.startswith("sent ")
    got = [json.loads(rec.value) for rec in read_records(stack.address, topic, timeout=60,
                                                         until=lambda n: n >= 55)]
    assert len(got) == 55
    assert {g["visitor_id"] for g in got} >= {"1", "2", "u1", "u2", "j"}
    by_key = {g["visitor_id"]: g for g in got}
    assert by_key["j"]["event_id"] == "j-1" and by_key["u1"]["item_id"] == "x"


def test_demo_runs_end_to_end(tmp_path: Path) -> None:
    """The README's first command, on its own broker and ports."""
    env = {"SESSIONREC_BROKER": f"kafka://127.0.0.1:{free_port()}",
           "SESSIONREC_WEB_PORT": str(free_port())}
    r = run(["demo", "--seconds", "4", "--rate", "50", "--items", "200"], env, timeout=400)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "[demo] suggestions received: 200" in r.stdout
    assert 'sessionrec_clicks_total{outcome="accepted"} 200.0' in r.stdout


def test_watch_prints_what_a_widget_receives(stack: LocalStack) -> None:
    from streams.codec import encode_recommendation
    from streams.produce import make_producer

    producer = make_producer(stack.address)
    for n in range(3):
        producer.send("recommendations", key=b"w1", value=encode_recommendation(
            "w1", "w1@1", f"e{n}", [("shoe", 0.9), ("sock", 0.5)], "model", 7, 1.7e9))
    producer.flush()
    producer.close()
    r = run(["watch", "--from-beginning", "--max", "3", "--seconds", "60"],
            {"SESSIONREC_BROKER": f"kafka://{stack.address}"})
    assert r.returncode == 0, r.stderr
    lines = [line for line in r.stdout.splitlines() if "w1@1" in line]
    assert len(lines) == 3 and all("shoe(0.90) sock(0.50)" in line for line in lines)
