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

from phi3_helpers import bench
from phi3_helpers.bench import llama_cpp
from phi3_helpers.bench.worker import Prompts
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


# The example output of `llama-bench -o json` in llama.cpp's tools/llama-bench/README.md (the copy vendored in
# llama-cpp-python 0.3.36), trimmed to the fields the parser reads and two neighbours: llama.cpp's documented
# shape, not a measurement. A real run here (build 0c1e570) printed these fields too, among 40 others.
LLAMA_BENCH_README_JSON = """[
  {"build_commit": "8cf427ff", "build_number": 5163, "cpu_info": "AMD Ryzen 7 7800X3D 8-Core Processor",
   "n_threads": 8, "n_prompt": 512, "n_gen": 0, "n_depth": 0, "avg_ns": 72135640, "avg_ts": 7100.002165,
   "stddev_ts": 140.341520, "samples_ns": [74601900, 71632900, 71745200, 71952700, 70745500],
   "samples_ts": [6863.1, 7147.55, 7136.37, 7115.79, 7237.21]},
  {"build_commit": "8cf427ff", "build_number": 5163, "cpu_info": "AMD Ryzen 7 7800X3D 8-Core Processor",
   "n_threads": 8, "n_prompt": 0, "n_gen": 128, "n_depth": 0, "avg_ns": 1076767880, "avg_ts": 118.881588,
   "stddev_ts": 1.041811, "samples_ns": [1075361300, 1065089400, 1071761200, 1081934900, 1089692600],
   "samples_ts": [119.03, 120.178, 119.43, 118.307, 117.464]}
]"""


def test_llama_bench_json_gives_ttft_from_the_prompt_test_and_decode_from_the_generation_test():
    row = llama_cpp.parse(LLAMA_BENCH_README_JSON)
    short = row["prompts"]["short"]
    assert (short["prompt_tokens"], short["new_tokens"], short["threads"]) == (512, 128, 8)
    assert short["ttft_ms"]["median"] == pytest.approx(1000 * 512 / 7136.37)  # the median run's, 71.7 ms
    assert short["ttft_ms"]["min"] == pytest.approx(1000 * 512 / 7237.21)
    assert short["ttft_ms"]["max"] == pytest.approx(1000 * 512 / 6863.1)
    assert short["tokens_per_s"] == pytest.approx(118.881588)
    assert short["ms_per_token"]["median"] == pytest.approx(1000 / 119.03)  # the median run's, not the mean
    assert "8cf427ff" in row["build"]
    with pytest.raises(StopIteration):  # no generation test: the row is skipped, with the reason
        llama_cpp.parse(LLAMA_BENCH_README_JSON.split(",\n  {")[0] + "]")


def test_llama_cpp_command_lines(tmp_path):
    assert llama_cpp.download_command(tmp_path)[1:] == [
        "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "llama-cpp-python==0.3.36", "-d", str(tmp_path),
    ]
    assert llama_cpp.build_commands() == [
        ["cmake", "-B", "build", "-DGGML_NATIVE=ON", "-DLLAMA_CURL=OFF"],
        ["cmake", "--build", "build", "--config", "Release", "--target", "llama-bench", "-j2"],
    ]
    exe, gguf = tmp_path / "llama-bench", tmp_path / "m.gguf"
    assert llama_cpp.bench_command(exe, gguf, 49, 64, 2, 5) == [
        str(exe), "-m", str(gguf), "-p", "49", "-n", "64", "-t", "2", "-r", "5", "-o", "json",
    ]


def test_without_cmake_the_llama_cpp_row_is_skipped_with_the_reason_and_the_bench_succeeds(
    offline_model, tmp_path, monkeypatch, capsys
):
    monkeypatch.setattr(llama_cpp, "folder", lambda: tmp_path / "llama.cpp")  # nothing built there
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))  # no cmake, no compiler
    reason = llama_cpp.built_or_reason(progress=lambda s: None)
    assert isinstance(reason, str) and "cmake" in reason and "install" in reason
    code = main(["--quick", "--backends", "onnx", "--runs", "1", "--tokens", "4", "--long-tokens", "64",
                 "--model", "smollm2-135m-phi3", "--output", str(tmp_path / "out"), "--llama-cpp"])
    out = capsys.readouterr().out
    doc = json.loads((tmp_path / "out" / "bench.json").read_text())
    assert code == 0 and doc["peers"] == [] and [r["status"] for r in doc["results"]] == ["ok"]
    row = next(s for s in doc["skipped"] if s["backend"] == "llama.cpp")
    assert "cmake" in row["reason"] and "not found on PATH" in row["reason"] and len(row["reason"].splitlines()) == 1
    assert "- llama.cpp Q4_1 CPU: skipped (llama.cpp: cmake" in out
    assert not (tmp_path / "llama.cpp").exists()  # nothing downloaded or built


@pytest.mark.parametrize("built", ["build/bin/llama-bench", "build/bin/Release/llama-bench.exe"])
def test_a_built_llama_bench_is_found_and_not_built_again(built, tmp_path, monkeypatch):
    """Single-config builds (make, ninja) and multi-config ones (MSVC: bin/Release/*.exe)."""
    monkeypatch.setenv("PHI3_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))  # a build would fail here: no cmake
    exe = tmp_path / "llama.cpp" / "llama_cpp_python-0.3.36" / "vendor" / "llama.cpp" / built
    exe.parent.mkdir(parents=True)
    exe.write_bytes(b"")
    (exe.parent / "llama-bench.pdb").write_bytes(b"")  # beside it on Windows: not a program
    assert llama_cpp.built_or_reason(progress=None) == exe


def test_the_table_shows_a_measured_zero_and_a_dash_only_for_what_was_not_measured():
    spread = {"median": 5.0, "min": 4.0, "max": 6.0}
    row = {"backend": "onnx", "precision": "int4", "device": "CPU", "status": "ok", "load_s": 0.0,
           "helper_cost_us_per_token": 0.0, "peak_rss_mb": 100.0, "size_on_disk_mb": 80.0,
           "prompts": {"short": {"prompt_tokens": 40, "ttft_ms": spread, "ms_per_token": spread, "tokens_per_s": 0.0},
                       "long": {"prompt_tokens": 500, "ttft_ms": spread, "ms_per_token": spread}}}
    doc = {"model": "m", "results": [row], "machine": {"cores": 2},
           "settings": {"max_new_tokens": 8, "runs": 1, "long_runs": 1, "warmup": 0}}
    cells = bench.markdown_table(doc).splitlines()[2].strip("| ").split(" | ")
    assert cells == ["onnx", "int4", "CPU", "0.0", "5 (4-6)", "5 (4-6)", "5.0 (4.0-6.0)", "5.0 (4.0-6.0)", "0.0", "-",
                     "0", "100", "80"]
