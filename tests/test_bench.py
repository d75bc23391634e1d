"""The benchmark: `bench --quick` on the offline model measures every available backend through the
backends themselves and writes a complete JSON (positive, finite values and the relations between
them; no timing thresholds) and a PNG; bad input exits 2 with one line."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest

from phi3_helpers.bench.worker import Prompts, median_interval
from phi3_helpers.cli import main as cli_main


def main(args):
    return cli_main(["bench", *args])


# Every measured configuration must have these, each a positive finite number.
NUMBERS = ["load_s", "import_s", "size_on_disk_mb", "peak_rss_mb", "model_rss_mb"]
PER_PROMPT = [
    "prompt_tokens", "new_tokens", "tokens_per_s", "ttft_ms.median", "ttft_ms.min", "ttft_ms.max",
    "ms_per_token.median", "ms_per_token.min", "ms_per_token.max", "cpu_ms_per_token.median",
]


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
        [
            sys.executable, "-m", "phi3_helpers", "bench", "--quick", "--model", "smollm2-135m-phi3", "--output",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=3600,
        env=os.environ.copy(),
    )
    return r, out


@pytest.mark.slow
def test_quick_bench_measures_every_available_backend_with_every_field(quick):
    from phi3_helpers.backends import available_backends

    r, out = quick
    assert r.returncode == 0, r.stderr[-3000:]
    doc = json.loads((out / "bench.json").read_text())
    measured = {res["backend"] for res in doc["results"] if res["status"] == "ok"}
    available = {name for name, why in available_backends().items() if not why}
    assert available and available <= measured, (
        available - measured, [x for x in doc["results"] if x["status"] != "ok"],
    )
    for res in doc["results"]:
        where = f"{res['backend']} {res['precision']} {res['device']}"
        assert res["status"] == "ok", where
        for key in NUMBERS:
            assert _positive_finite(res[key]), (where, key, res[key])
        for length in ("short", "long"):
            for key in PER_PROMPT:
                assert _positive_finite(_get(res["prompts"][length], key)), (where, length, key)
        short, long = res["prompts"]["short"], res["prompts"]["long"]
        assert long["prompt_tokens"] > 5 * short["prompt_tokens"], where
        assert all(p["new_tokens"] <= doc["settings"]["max_new_tokens"] for p in (short, long)), where
        # the helper's own cost per token is a part of the time per token, not more than all of it
        assert 0 < res["helper_cost_us_per_token"] < 1000 * short["ms_per_token"]["median"], where
        runtime = short["runtime"]["ms_per_token"]["median"]
        if res["runtime"] == "OpenVINO GenAI":  # the pipeline's own perf_metrics, read for the same runs
            assert _positive_finite(runtime) and _positive_finite(short["runtime"]["ttft_ms"]["median"]), where
        else:
            assert runtime is None, where
    for name, why in available_backends().items():  # e.g. npu-classic off Windows: skipped, with the reason
        if why:
            assert name not in measured and any(s["backend"] == name and s["reason"] == why for s in doc["skipped"])
    for key in ("cpu", "cores", "versions", "load_avg_before"):
        assert doc["machine"][key], key


@pytest.mark.slow
def test_quick_bench_writes_a_png_chart_and_a_table(quick):
    r, out = quick
    assert (out / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    header = [line for line in r.stdout.splitlines() if line.startswith("| backend")]
    assert (
        header
        and "TTFT short ms" in header[0]
        and "runtime's own ms/token" in header[0]
        and "helper us/token" in header[0]
    )


@pytest.mark.parametrize(
    "args, words",
    [
        (["--backends", "tensorflow"], "unknown backend"), (["--precisions", "int3"], "unknown precision"),
        (["--devices", "TPU"], "unknown device"), (["--runs", "0"], "must be 1 or more"),
        (["--tokens", "many"], "not a whole number"), (["--speed", "max"], "unrecognized arguments"),
    ],
)
def test_bad_input_exits_2_with_one_line_naming_the_fix(args, words, capsys, offline_model):
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

    monkeypatch.setattr(bench, "export_ready", lambda cfg, model: False)  # as if the export were missing
    failed = subprocess.CompletedProcess([], 1, "", "Traceback (most recent call last):\n  ...\nOSError: disk full\n")
    monkeypatch.setattr(bench.subprocess, "run", lambda *a, **k: failed)
    code = main(["--quick", "--backends", "transformers", "--model", "smollm2-135m-phi3", "--output", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert (
        err[-1].startswith("error: export failed for transformers")
        and "disk full" in err[-1]
        and "--backends" in err[-1]
    ), err
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


def test_median_interval_counts_tokens_not_callbacks():
    # callbacks at 0.1 s (1 token), 0.2 s (1), 0.4 s (2 tokens at once), 0.5 s (1): 100 ms per token throughout
    assert median_interval([(0.1, 1), (0.2, 2), (0.4, 4), (0.5, 5)]) == pytest.approx(100.0)
    assert median_interval([(0.0, 1)]) is None
