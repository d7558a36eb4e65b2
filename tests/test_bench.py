"""`sessionrec bench core`, run small: every figure issue #4 asks for is printed and sane.

Figures are never asserted against targets here (the machine is noisy); these tests check
that the command measures what it says: fields present, ratios computed from the lines
beside them, recall a fraction, the curve's plot written."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from streams.bench import load_stream, run_core
from streams.cli import main
from streams.settings import Settings

CORE_FIELDS = ("clicks_per_s", "learn_us_per_click", "recommend_us_per_click",
               "index_refresh_us_per_click", "p50_ms", "p99_ms", "peak_rss_mb", "bytes_per_item",
               "bruteforce_qps", "index_qps", "index_recall_at_20", "memory_vs_budget",
               "staleness_p99_s", "staleness_max_s", "index_batch_us_per_query", "scan_floor_us_per_query",
               "index_batch_vs_scan_floor")


def lines_of(capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]


def test_core_prints_every_figure_per_batch_size(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "core", "--clicks", "400", "--items", "300", "--dim", "16",
                 "--batch", "1,8", "--no-gensim"]) == 0
    lines = lines_of(capsys)
    assert [line["batch"] for line in lines] == [1, 8]
    for line in lines:
        for name in CORE_FIELDS:
            assert isinstance(line[name], (int, float)), name
        assert line["clicks"] == 400 and line["dim"] == 16
        assert 0.0 <= float(line["index_recall_at_20"]) <= 1.0
        assert float(line["clicks_per_s"]) > 0
        assert float(line["p50_ms"]) <= float(line["p99_ms"])
        assert 0.0 <= line["staleness_p99_s"] <= line["staleness_max_s"]
    ratio = float(lines[1]["clicks_per_s"]) / float(lines[0]["clicks_per_s"])
    assert lines[1]["batch_ratio_vs_first"] == pytest.approx(ratio, abs=1e-3)


def test_curve_preloads_each_size_and_plots(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    png = tmp_path / "curve.png"
    assert main(["bench", "core", "--curve", "--sizes", "500,250", "--clicks", "300", "--dim", "16",
                 "--batch", "8", "--no-gensim", "--plot", str(png)]) == 0
    lines = lines_of(capsys)
    assert [line["curve_items"] for line in lines] == [250, 500]
    # Preloaded: the model knows the whole catalogue, not only the clicked items.
    assert [line["items_preloaded"] for line in lines] == [250, 500]
    assert lines[0]["curve_ratio_vs_smallest"] == 1.0
    ratio = float(lines[1]["clicks_per_s"]) / float(lines[0]["clicks_per_s"])
    assert lines[1]["curve_ratio_vs_smallest"] == pytest.approx(ratio, abs=1e-3)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_curve_rounds_run_every_size_in_turn_and_report_medians(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "core", "--curve", "--sizes", "300,200", "--clicks", "200", "--dim", "8",
                 "--batch", "8", "--no-gensim", "--rounds", "3"]) == 0
    small, large = lines_of(capsys)
    for line in (small, large):
        rounds = line["curve_clicks_per_s_rounds"]
        assert line["curve_rounds"] == 3 and len(rounds) == 3 and min(rounds) > 0
        # The first round is the line's own full measurement.
        assert rounds[0] == line["clicks_per_s"]
        assert line["curve_clicks_per_s_median"] == pytest.approx(sorted(rounds)[1], abs=0.1)
    ratios = [b / a for a, b in zip(small["curve_clicks_per_s_rounds"], large["curve_clicks_per_s_rounds"],
                                    strict=True)]
    assert large["curve_ratio_rounds"] == pytest.approx(ratios, abs=1e-3)
    assert large["curve_ratio_vs_smallest"] == pytest.approx(sorted(ratios)[1], abs=1e-3)
    assert small["curve_ratio_rounds"] == [1.0, 1.0, 1.0]


WARM_THEN_RUN = """
import json, numba
from dataclasses import replace
from models import kernels, topk
from models.recommender import warm_up
from streams.bench import load_stream, run_core
from streams.settings import Settings

def compiled():
    return {f"{m.__name__}.{n}": len(d.signatures) for m in (kernels, topk)
            for n, d in vars(m).items() if isinstance(d, numba.core.registry.CPUDispatcher)}

settings = Settings.from_env(dim=16, seed=0)
warm_up(settings.recommender_config(), k=20)
before = compiled()
stream = load_stream(None, 600, 300, 0)
for batch in (1, 8):
    run_core(stream, replace(settings, share_interval_s=0.01), batch=batch)
print(json.dumps({"before": before, "after": compiled()}))
"""


def test_the_rows_waiting_to_be_shared_stay_bounded_between_shares() -> None:
    """With an interval the run never reaches, only ``share_max_rows`` starts shares: the
    rows kept for them stay under the bound plus what a few batches add (a part of 1,000
    rows ends a pass within two batches), where without it they pile up."""
    settings = replace(Settings.from_env(dim=16, seed=0), share_interval_s=3600.0, share_min_drift=0.0)
    stream = load_stream(None, 3000, 50_000, 0)
    free = run_core(stream, replace(settings, share_max_rows=0), preload_items=50_000, batch=8)
    bounded = run_core(stream, replace(settings, share_max_rows=500, share_part_rows=1000),
                       preload_items=50_000, batch=8)
    most = 500 + 3 * 8 * bounded["_model"].vectors._base_room
    assert 500 <= bounded["shared_base_peak_rows"] <= most
    assert free["shared_base_peak_rows"] > 3 * most  # the bound had work to do


def test_warm_up_compiles_every_kernel_the_timed_loop_calls() -> None:
    """`bench core` (and the worker) call ``warm_up`` before the first click: a kernel the
    click path reaches with a type warm_up did not use would be compiled inside the timed
    loop (13 s on a fresh clone), counted as per-click time. Fresh process: kernels compiled
    by earlier tests cannot hide a gap."""
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", WARM_THEN_RUN], cwd=root, capture_output=True,
                         text=True, check=True, timeout=600)
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen["before"], "no compiled kernels found"
    assert seen["after"] == seen["before"]


def test_plot_needs_the_curve(tmp_path: Path) -> None:
    assert main(["bench", "core", "--clicks", "10", "--plot", str(tmp_path / "x.png")]) == 2


def test_rounds_need_the_curve_and_one_count_of_at_least_one() -> None:
    assert main(["bench", "core", "--clicks", "10", "--rounds", "2"]) == 2
    for bad in ("0", "2,3"):
        with pytest.raises(SystemExit):
            main(["bench", "core", "--curve", "--clicks", "10", "--rounds", bad])


@pytest.mark.broker
def test_e2e_prints_throughput_and_live_latency_beside_the_passthrough() -> None:
    """`bench e2e` run small on the real broker: the ceiling, the worker's drain rate, then
    the live phase at half that rate on new topics, for the worker (started from the model
    the drain left, saved at its clean stop) and for the pass-through, every click timed.
    Every topic, the live phase's too, has the partitions asked for (the broker says so)."""
    from streams.bench_e2e import bench_e2e

    (line,) = bench_e2e(seconds=2.0, items=200, clicks=600, batches=(8,), partitions=2)
    assert line["answered"] == 600 and line["batch"] == 8
    assert line["partitions"] == line["latency_partitions"] == 2
    assert line["ratio_vs_passthrough"] == round(line["clicks_per_s"] / line["passthrough_clicks_per_s"], 3)
    rate = max(50.0, line["clicks_per_s"] / 2)  # from the printed (rounded) drain rate
    assert abs(line["latency_rate_clicks_per_s"] - rate) <= 0.1
    # Every live click answered and timed (the count is int(unrounded rate * seconds)), after
    # a second's worth answered untimed (the broker's first writes to fresh partitions).
    assert abs(line["latency_samples"] - rate * 2.0) <= 1
    assert abs(line["latency_warmup_clicks"] - rate) <= 1
    for who in ("", "passthrough_"):
        assert 0 < line[f"{who}p50_ms"] <= line[f"{who}p99_ms"] <= line[f"{who}p999_ms"]


def test_learning_is_set_beside_gensim_round_by_round(capsys: pytest.CaptureFixture[str]) -> None:
    """Learning alone and gensim alternate; the ratio is the median of the rounds' ratios."""
    assert main(["bench", "core", "--clicks", "400", "--items", "300", "--dim", "16",
                 "--learn-rounds", "3"]) == 0
    (line,) = lines_of(capsys)
    learn, words, ratios = line["learn_only_rounds"], line["gensim_rounds"], line["learn_ratio_rounds"]
    assert len(learn) == len(words) == len(ratios) == 3
    for a, b, r in zip(learn, words, ratios, strict=True):
        assert a > 0 and b > 0 and r == pytest.approx(a / b, rel=1e-3)
    assert line["learn_ratio_vs_gensim"] == pytest.approx(sorted(ratios)[1], abs=1e-4)
    assert line["learn_only_clicks_per_s"] == pytest.approx(sorted(learn)[1], abs=0.1)
    assert line["gensim_words_per_s"] == pytest.approx(sorted(words)[1], abs=0.1)


def test_without_gensim_the_bench_says_so_and_still_times_learning(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """gensim is an optional extra: where it cannot be imported, the line says how to get it,
    carries learning's own rounds, and no ratio made up from nothing."""
    monkeypatch.setitem(sys.modules, "gensim.models", None)  # import of it raises ImportError
    assert main(["bench", "core", "--clicks", "400", "--items", "300", "--dim", "16",
                 "--learn-rounds", "2"]) == 0
    (line,) = lines_of(capsys)
    assert "pip install" in line["gensim"] and line["gensim_words_per_s"] is None
    assert len(line["learn_only_rounds"]) == 2 and min(line["learn_only_rounds"]) > 0
    assert "learn_ratio_vs_gensim" not in line and "gensim_rounds" not in line
    assert line["clicks_per_s"] > 0


def test_blas_runs_on_the_threads_the_settings_allow() -> None:
    """``SESSIONREC_BLAS_THREADS`` reaches the BLAS numpy loaded (a worker and the CLI apply
    it at start), and 0 leaves BLAS its own default."""
    from threadpoolctl import threadpool_info, threadpool_limits

    from streams.settings import Settings

    def blas_threads() -> set[int]:
        return {int(i["num_threads"]) for i in threadpool_info() if i["user_api"] == "blas"}

    before = blas_threads()
    assert before, "numpy's BLAS was not found"
    try:
        threadpool_limits(limits=2, user_api="blas")
        Settings.from_env({"SESSIONREC_BLAS_THREADS": "0"}).limit_threads()
        assert blas_threads() == {2}
        Settings.from_env({"SESSIONREC_BLAS_THREADS": "1"}).limit_threads()
        assert blas_threads() == {1}
    finally:
        threadpool_limits(limits=max(before), user_api="blas")
