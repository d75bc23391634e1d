"""doctor: each check from real inputs, the chapter rows and their device vocabulary, and real runs."""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from phi3_helpers import doctor
from phi3_helpers.devices import report
from phi3_helpers.doctor import CHAPTERS, FAIL, INFO, OK, GiB

REPO = Path(__file__).resolve().parents[1]


def _chapter(number: str):
    return next(c for c in CHAPTERS if c.number == number)


# -- pins ------------------------------------------------------------------------------------------------
def test_a_pin_that_does_not_match_the_installed_version_fails_with_its_fix(tmp_path):
    import psutil

    req = tmp_path / "requirements.txt"
    req.write_text(
        "# a comment\n"
        "psutil==0.0.1\n"  # installed: a newer version
        f"pytest=={__import__('pytest').__version__}  # matches\n"
        "no-such-package-phi3==1.0\n"
        'onnxruntime-genai-directml==0.13.1 ; sys_platform == "nonexistent-os"\n'
    )
    rows = {r.check: r for r in doctor.requirement_checks(req.read_text(), doctor.installed_version)}
    bad = rows["package psutil"]
    assert bad.status == FAIL and bad.found == psutil.__version__ and bad.needed == "==0.0.1"
    assert bad.fix == 'python -m pip install "psutil==0.0.1"'
    assert "04" in bad.chapters  # psutil is used by every chapter: the mismatch blocks them
    assert rows["package pytest"].status == OK and rows["package pytest"].chapters == ()  # a test tool
    assert rows["package no-such-package-phi3"].found == "not installed"
    assert "package onnxruntime-genai-directml" not in rows  # its marker does not apply here


def test_markers_are_evaluated_for_the_given_platform():
    text = (
        'onnxruntime-genai-directml==0.13.1 ; sys_platform == "win32"\nonnxruntime==1.31.1 ; sys_platform != "win32"\n'
    )
    env = {"sys_platform": "win32", "platform_system": "Windows"}
    names = [r.check for r in doctor.requirement_checks(text, doctor.installed_version, env=env)]
    assert names == ["package onnxruntime-genai-directml"]


def test_the_course_pins_are_all_installed_here():
    rows = doctor.requirement_checks((REPO / "requirements.txt").read_text(), doctor.installed_version)
    assert rows and all(r.status == OK for r in rows), [r for r in rows if r.status != OK]


def test_a_bad_pin_blocks_its_chapters_and_the_exit_code(tmp_path):
    req = tmp_path / "requirements.txt"
    req.write_text("openvino==2000.1\n")
    facts = doctor.detect(requirements=[req])
    rows = doctor.checks(facts)
    chapters = {r.check: r for r in rows if r.check.startswith("chapter ")}
    assert chapters["chapter 03-openvino.ipynb"].status == FAIL
    assert 'pip install "openvino==2000.1"' in chapters["chapter 03-openvino.ipynb"].fix
    assert chapters["chapter 02-directml.ipynb"].status != FAIL  # chapter 02 does not use OpenVINO
    assert doctor.verdict(rows) == doctor.EXIT_NOT_READY


def test_matching_pins_fold_into_one_row_and_a_wrong_one_keeps_its_own(tmp_path):
    req = tmp_path / "requirements.txt"
    req.write_text(f"psutil=={__import__('psutil').__version__}\npytest=={pytest.__version__}\nnbval==0.0.1\n")
    rows = doctor.summarized(doctor.requirement_checks(req.read_text(), doctor.installed_version))
    assert [(r.check, r.status) for r in rows] == [("packages", OK), ("package nbval", FAIL)]
    assert rows[0].found == "2 of 3 match the pins"


# -- versions, drivers, RAM, disk ------------------------------------------------------------------------
def test_python_versions():
    assert doctor.python_check((3, 11, 9)).status == OK
    assert doctor.python_check((3, 12, 1)).status == "warn"
    old = doctor.python_check((3, 9, 18))
    assert old.status == FAIL and "3.11" in old.fix


@pytest.mark.parametrize(
    ("driver", "status"),
    [("32.0.100.3104", OK), ("32.0.100.4023", OK), ("3104", OK), ("32.0.100.2408", FAIL), ("2540", FAIL)],
)
def test_npu_driver_against_the_minimum_on_windows(driver, status):
    row = doctor.npu_driver_check("Intel(R) AI Boost", driver, "Windows")
    assert row.status == status
    if status == FAIL:
        assert doctor.NPU_DRIVER_URL in row.fix and row.chapters == ("01",)


def test_npu_on_linux_needs_kernel_6_6():
    assert doctor.npu_driver_check("Intel(R) AI Boost", "1.10.0", "Linux", "6.5.0-generic").status == FAIL
    assert doctor.npu_driver_check("Intel(R) AI Boost", "1.10.0", "Linux", "6.8.0-45-generic").status == OK


def test_device_rows_from_what_openvino_reports_here():
    from phi3_helpers.backends.npu import NPUInfo, detect_npu, read_npu_info
    from phi3_helpers.backends.openvino import device_name

    rows = doctor.device_checks(report(), detect_npu(), "Linux")
    assert any(r.check == f"CPU {device_name('CPU')}" and r.status == OK for r in rows)
    if not detect_npu().present:
        assert any(r.check == "NPU" and r.status == INFO and "chapter 01 runs on the CPU" in r.fix for r in rows)
    npu = read_npu_info(["CPU", "NPU"], lambda dev, key: {"FULL_DEVICE_NAME": "Intel(R) AI Boost"}.get(key, "2408"))
    (row,) = [r for r in doctor.device_checks(report(), npu, "Windows") if r.check.startswith("NPU")]
    assert row.check == "NPU Intel(R) AI Boost" and row.status == FAIL and row.chapters == ("01",)
    (row,) = doctor.device_checks(report(), NPUInfo(False, problem="RuntimeError: no plugins"), "Linux")
    assert row.status == FAIL and "no plugins" in row.found and "03" in row.chapters


def test_disk_too_small_for_phi3_says_what_to_do():
    sizes = {k: n for k, (_, _, n) in doctor.artifacts("phi3-mini").items()}  # the hub catalog's published sizes
    needs = doctor.disk_needs("phi3-mini", built={}, chapters=["02"])
    assert needs == {"hub-onnx-cpu": sizes["hub-onnx-cpu"], "hub-onnx-dml": sizes["hub-onnx-dml"]}
    assert 2.0e9 < needs["hub-onnx-cpu"] < 3.0e9  # microsoft/Phi-3-mini-4k-instruct-onnx, CPU int4: 2.72 GB
    row = doctor.disk_check(3 * GiB, needs, "/cache", "phi3-mini")
    assert row.status == FAIL and "PHI3_MODEL=smollm2-135m-phi3" in row.fix
    assert "ONNX Runtime int4 CPU download" in row.needed
    assert doctor.disk_check(8 * GiB, needs, "/cache", "phi3-mini").status == OK


def test_disk_needs_count_only_what_is_not_built_here():
    built = doctor.built_artifacts("smollm2-135m-phi3")
    assert built["hf"]  # the session's offline model
    needs = doctor.disk_needs("smollm2-135m-phi3", built, ["01", "02", "03", "04"])
    assert needs["hf"] == 0
    everything = doctor.disk_needs("smollm2-135m-phi3", {}, ["01", "02", "03", "04"])
    assert sum(everything.values()) > sum(needs.values()) and everything["hf"] == 517 * doctor.MiB


def test_ram():
    assert doctor.ram_check(6 * GiB, "phi3-mini").status == FAIL
    assert doctor.ram_check(6 * GiB, "smollm2-135m-phi3").status == OK


# -- hub or mirror ---------------------------------------------------------------------------------------
ONLINE = {"HF_HUB_OFFLINE": "", "TRANSFORMERS_OFFLINE": ""}  # huggingface_hub reads either


class _Hub(http.server.BaseHTTPRequestHandler):
    """A stand-in mirror: answers HTTP like a hub's front page (the probe only needs an answer)."""

    def do_HEAD(self):  # noqa: N802
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_a_mirror_on_any_port_is_probed_through_hf_endpoint():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        up = _doctor("--model", "smollm2-135m-phi3", HF_ENDPOINT=endpoint, **ONLINE)
    finally:
        server.shutdown()
        server.server_close()
    down = _doctor("--model", "smollm2-135m-phi3", HF_ENDPOINT=endpoint, **ONLINE)  # the port, now closed
    hub_line = next(line for line in up.stdout.splitlines() if line.startswith("OK    hub "))
    assert f"{endpoint} answers" in hub_line
    warn = next(line for line in down.stdout.splitlines() if " hub " in line)
    assert warn.startswith("WARN") and f"the Hugging Face hub at {endpoint} is unreachable" in warn
    assert "HF_ENDPOINT to a mirror" in down.stdout
    assert up.returncode == down.returncode == 0  # an unreachable hub is not a blocker: the offline model runs


def test_offline_by_choice():
    row = doctor.hub_check("https://huggingface.co", offline=True, probe=None)
    assert row.status == INFO and "HF_HUB_OFFLINE" in row.found


# -- chapters and their device vocabulary ----------------------------------------------------------------
def _parameter_cell(notebook: str) -> str:
    nb = json.loads((Path(__file__).resolve().parents[1] / "notebooks" / notebook).read_text())
    return next("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code" and "PHI3_DEVICE" in
                "".join(c["source"]))


@pytest.mark.parametrize("number", ["01", "02", "03", "04"])
def test_every_word_doctor_accepts_runs_the_chapters_own_parameter_cell(number, monkeypatch, capsys):
    """The chapter's real parameter cell, executed with each PHI3_DEVICE word doctor lists for it."""
    chapter = _chapter(number)
    cell = _parameter_cell(chapter.notebook)
    for value in chapter.devices:
        monkeypatch.setenv("PHI3_DEVICE", value or "AUTO")
        exec(compile(cell, chapter.notebook, "exec"), {})  # raises if the chapter cannot take the word
        assert "DEVICE=" in capsys.readouterr().out  # each chapter says what it does with the word
    for word in ("CPU", "GPU", "NPU", "AUTO", "WINML", "WINML-NPU"):  # the one vocabulary works in every chapter
        assert doctor.device_accepted(chapter, word)


def test_a_word_outside_the_course_vocabulary_is_flagged_with_the_fix():
    rows = doctor.chapter_checks(report(), [], device_env="TPU")
    by = {r.check: r for r in rows}
    for ch in CHAPTERS:
        assert by[f"chapter {ch.notebook}"].status == FAIL and "PHI3_DEVICE=TPU" in by[f"chapter {ch.notebook}"].fix
    assert doctor.verdict(rows) == doctor.EXIT_NOT_READY
    assert all(r.status == OK for r in doctor.chapter_checks(report(), [], device_env="GPU"))


def test_a_missing_runtime_blocks_its_chapter_only():
    from phi3_helpers.backends import available_backends

    rows = [r for r in report() if r["backend"] != "onnx"]
    why = "backend 'onnx' needs the Python package 'onnxruntime_genai', which is not installed; run: pip install ..."
    rows.append({"backend": "onnx", "device": "-", "available": False, "detail": why})
    by = {r.check: r for r in doctor.chapter_checks(rows, [], None)}
    assert by["chapter 02-directml.ipynb"].status == FAIL and "onnxruntime_genai" in by["chapter 02-directml.ipynb"].fix
    assert by["chapter 01-npu.ipynb"].status == OK and not available_backends()["npu"]
    assert "onnx on" not in by["chapter 04-compare.ipynb"].found and "no onnx" in by["chapter 04-compare.ipynb"].found


def test_an_optional_backend_missing_keeps_its_chapter_ready_and_pins_follow_the_backends_requires():
    rows = [r for r in report() if r["backend"] != "openvino-optimum"]
    rows.append({"backend": "openvino-optimum", "device": "-", "available": False, "detail": "optimum is missing"})
    by = {r.check: r for r in doctor.chapter_checks(rows, [], None)}
    ch3 = by["chapter 03-openvino.ipynb"]
    assert ch3.status == OK and "openvino on CPU" in ch3.found and "no openvino-optimum" in ch3.found
    packages = {c.number: c.packages for c in CHAPTERS}  # read from each backend's ``requires``
    assert {"openvino-genai", "nncf", "torch"} <= packages["01"] and "onnxruntime-genai" not in packages["01"]
    assert "onnxruntime-genai" in packages["02"] and "openvino" not in packages["02"]
    assert "matplotlib" in packages["04"] and "matplotlib" not in packages["03"]


def test_prepare_targets_cover_what_each_chapter_loads():
    todo = doctor.targets(report(), ["01", "02", "03"])
    labels = {(t.chapter, t.backend, t.precision) for t in todo}
    assert {
        ("01", "npu", "int4"),
        ("02", "onnx", "int4"),
        ("03", "openvino", "int4"),
        ("03", "openvino-optimum", "fp16"),
    } <= labels
    assert any(t.export_only and t.precision == "int8" for t in todo)  # chapter 03's export lesson
    assert len({(t.backend, t.device, t.precision) for t in todo}) == len(todo)


# -- real runs -------------------------------------------------------------------------------------------
def _doctor(*args: str, **env: str) -> subprocess.CompletedProcess:
    full = dict(os.environ, **env)
    return subprocess.run(
        [sys.executable, "-m", "phi3_helpers.doctor", *args],
        cwd=REPO,
        env=full,
        capture_output=True,
        text=True,
        timeout=1800,
    )


def test_doctor_runs_and_ends_with_one_line_per_chapter():
    done = _doctor()
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    for ch in CHAPTERS:
        assert any(line.strip().startswith(f"{ch.notebook}: ready") for line in lines), done.stdout
    assert "doctor: every chapter can run here" in lines[-1]


def test_doctor_exits_2_with_the_reason_when_a_chapter_cannot_run():
    done = _doctor(PHI3_DEVICE="TPU")
    assert done.returncode == 2
    assert "01-npu.ipynb: NOT READY - PHI3_DEVICE=TPU" in done.stdout


@pytest.mark.slow
def test_smoke_on_this_machine_cpu():
    done = _doctor("--smoke", "--chapter", "01")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "[1/1] chapter 01: npu int4 ..." in done.stdout
    smoke = next(line for line in done.stdout.splitlines() if "smoke:" in line)
    tokens = int(smoke.split("smoke: ", 1)[1].split(" tokens", 1)[0])
    assert 0 < tokens <= 10
    assert "01-npu.ipynb: ready - npu on CPU" in done.stdout and "prepared and smoke-tested" in done.stdout
    assert "TracerWarning" not in done.stdout + done.stderr
