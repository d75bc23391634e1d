"""The benchmark: `bench --quick` on the offline model measures every available backend and writes
a complete JSON (positive, finite values; no timing thresholds) and a PNG; bad input exits 2."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest

from phi3_helpers.bench import main
from phi3_helpers.bench.raw import TokenClock, median_interval
from phi3_helpers.bench.worker import Prompts

# Every measured configuration must have these, each a positive finite number.
NUMBERS = ["load_s", "import_s", "size_on_disk_mb", "peak_rss_mb", "model_rss_mb"]
PER_PROMPT = ["prompt_tokens", "new_tokens", "tokens_per_s", "ttft_ms.median", "ttft_ms.min", "ttft_ms.max",
              "ms_per_token.median", "ms_per_token.min", "ms_per_token.max", "cpu_ms_per_token.median"]
OVERHEAD = ["ratio", "helper_ms_per_token.median", "raw_ms_per_token.median", "pair_ratio.median", "cpu_ratio",
            "interval_ratio", "helper_ttft_ms", "raw_ttft_ms", "helper_cpu_us_per_token", "new_tokens"]


def _get(d: dict, dotted: str):
    for key in dotted.split("."):
        d = d[key]
    return d


def _positive_finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


@pytest.fixture(scope="module")
def quick(tmp_path_factory, offline_model):
    out = tmp_path_factory.mktemp("bench")
    r = subprocess.run(
        [sys.executable, "-m", "phi3_helpers", "bench", "--quick", "--model", "smollm2-135m-phi3", "--output", str(out)],
        capture_output=True, text=True, timeout=3600, env=os.environ.copy(),
    )
    return r, out


def test_quick_bench_measures_every_available_backend_with_every_field(quick):
    from phi3_helpers.backends import available_backends

    r, out = quick
    assert r.returncode == 0, r.stderr[-3000:]
    doc = json.loads((out / "bench.json").read_text())
    measured = {res["backend"] for res in doc["results"] if res["status"] == "ok"}
    available = {name for name, why in available_backends().items() if not why}
    assert available and available <= measured, (available - measured, [x for x in doc["results"] if x["status"] != "ok"])
    for res in doc["results"]:
        where = f"{res['backend']} {res['precision']} {res['device']}"
        assert res["status"] == "ok", where
        for key in NUMBERS:
            assert _positive_finite(res[key]), (where, key, res[key])
        for length in ("short", "long"):
            for key in PER_PROMPT:
                assert _positive_finite(_get(res["prompts"][length], key)), (where, length, key)
        assert res["prompts"]["long"]["prompt_tokens"] > 10 * res["prompts"]["short"]["prompt_tokens"] / 2, where
        o = res["overhead"]
        assert o["status"] == "ok", (where, o)
        for key in OVERHEAD:
            assert _positive_finite(_get(o, key)), (where, key)
        # Like for like: the raw loop (greedy, same settings and prompt ids) starts with the helper's
        # tokens. (Two loaded int4 copies may part later on near-tied logits, so only the start.)
        assert isinstance(o["same_tokens"], bool) and o["agreeing_tokens"] >= 1, (where, o["agreeing_tokens"])
    for key in ("cpu", "cores", "versions", "load_avg_before"):
        assert doc["machine"][key], key


def test_quick_bench_writes_a_png_chart_and_a_table(quick):
    r, out = quick
    assert (out / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    header = [line for line in r.stdout.splitlines() if line.startswith("| backend")]
    assert header and "TTFT short ms" in header[0] and "helper/raw" in header[0]


@pytest.mark.parametrize(
    "args, words",
    [
        (["--backends", "tensorflow"], "unknown backend"),
        (["--precisions", "int3"], "unknown precision"),
        (["--devices", "TPU"], "unknown device"),
        (["--runs", "0"], "must be 1 or more"),
        (["--tokens", "many"], "not a whole number"),
        (["--speed", "max"], "unrecognized arguments"),
    ],
)
def test_bad_input_exits_2_with_one_line_naming_the_fix(args, words, capsys):
    try:
        code = main(args)
    except SystemExit as exc:  # argparse errors
        code = exc.code
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and words in err, err
    assert "use" in err or "see:" in err


def test_unwritable_output_exits_2_with_one_line_before_measuring(offline_model, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    for output in ("/proc/nope", str(blocker / "bench")):
        code = main(["--quick", "--backends", "transformers", "--model", "smollm2-135m-phi3", "--output", output])
        captured = capsys.readouterr()
        err = captured.err.strip()
        assert code == 2, err
        assert len(err.splitlines()) == 1 and "cannot write to --output" in err and "choose a folder" in err, err
        assert "Traceback" not in err and "measuring" not in err and not captured.out


def test_a_failed_export_exits_2_with_one_line(offline_model, tmp_path, monkeypatch, capsys):
    import phi3_helpers.bench as bench

    monkeypatch.setattr(bench, "export_ready", lambda cfg, model: False)
    failed = subprocess.CompletedProcess([], 1, "", "Traceback (most recent call last):\n  ...\nOSError: disk full\n")
    monkeypatch.setattr(bench.subprocess, "run", lambda *a, **k: failed)
    code = main(["--quick", "--backends", "transformers", "--model", "smollm2-135m-phi3", "--output", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[-1].startswith("error: export failed for transformers") and "disk full" in err[-1] and "--backends" in err[-1], err
    assert not any("Traceback" in line for line in err)


def test_prompts_are_fresh_each_run_and_the_long_one_fits(load_backend):
    llm = load_backend("openvino", "int4")
    prompts = Prompts(llm, long_target=1000, max_new_tokens=32)
    _, a = prompts.next("short")
    _, b = prompts.next("short")
    assert a != b, "a repeated prompt would measure OpenVINO GenAI's prefix cache, not the prefill"
    assert 16 <= len(a) <= 64
    _, long = prompts.next("long")
    assert 900 <= len(long) <= min(1000, llm.max_prompt_tokens)


def test_token_clock_and_median_interval_count_tokens_not_callbacks(monkeypatch):
    from phi3_helpers.bench import raw

    times = iter([0.0, 0.1, 0.2, 0.4, 0.5, 0.6])  # start, four callbacks, end
    monkeypatch.setattr(raw.time, "perf_counter", lambda: next(times))
    clock = TokenClock()
    for ids in ([1], [2], [3, 4], [5]):  # the third callback brings two tokens
        clock.tick(ids)
    run = clock.run()
    assert run.tokens == 5 and run.token_ids == [1, 2, 3, 4, 5]
    assert run.ttft_ms == pytest.approx(100.0)
    assert run.ms_per_token == pytest.approx(400.0 / 4)
    assert run.median_interval_ms == pytest.approx(100.0)
    assert median_interval([(0.0, 1)]) is None
