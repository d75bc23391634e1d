"""The command line: answers stream to stdout, metrics to stderr; bad input exits 2 with one line."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from phi3_helpers.cli import main


def run_cli(*args, timeout=600):
    return subprocess.run(
        [sys.executable, "-m", "phi3_helpers", *args], capture_output=True, text=True, timeout=timeout,
        env=os.environ.copy(),
    )


def test_ask_streams_the_answer_and_prints_one_metrics_line(offline_model):
    r = run_cli(
        "ask", "What is the capital of France?", "--backend", "openvino", "--precision", "int4", "--max-new-tokens",
        "32",
    )
    assert r.returncode == 0, r.stderr
    assert "Paris" in r.stdout
    metrics = [line for line in r.stderr.splitlines() if "time to first token" in line]
    assert len(metrics) == 1 and "openvino | CPU | int4" in metrics[0]


def test_devices_lists_backends_and_says_why_others_are_missing(offline_model):
    r = run_cli("devices")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split()[:3] == ["backend", "device", "ok"]
    assert any(line.split()[:3] == ["openvino", "CPU", "yes"] for line in lines)
    assert any(line.split()[:2] == ["openvino", "NPU"] for line in lines)


def test_prepare_prints_the_prepared_folder(offline_model):
    r = run_cli("prepare", "--backend", "openvino", "--precision", "fp16", "--model", "smollm2-135m-phi3")
    assert r.returncode == 0, r.stderr
    folder = r.stdout.strip().splitlines()[-1]
    assert folder.endswith("smollm2-135m-phi3-fp16") and os.path.isfile(os.path.join(folder, "openvino_model.xml"))


@pytest.mark.parametrize(
    "args, word",
    [
        (["ask", "   "], "empty"), (["ask", "hi", "--backend", "tensorflow"], "unknown backend"),
        (["ask", "hi", "--precision", "int3"], "int4, int8, fp16"),
        (["ask", "hi", "--device", "ABSENT"], "not available here"),
        (["ask", "hi", "--device", "TPU"], "unknown device"), (["ask", "hi", "--model", "phi-42"], "unknown model"),
        (["ask", "hi", "--model", "/nonexistent/model"], "does not exist"),
        (["ask", "hi", "--max-new-tokens", "0"], "--max-new-tokens: '0' must be 1 or more"),
        (["ask", "hi", "--max-new-tokens", "-3"], "--max-new-tokens: '-3' must be 1 or more"),
        (["ask", "hi", "--temperature", "-1"], "temperature"), (["ask", "hi", "--top-p", "0"], "top_p"),
        (["ask", "hi", "--top-p", "1.5"], "top_p"), (["ask", "hi", "--max-new-tokens", "many"], "not a whole number"),
        (["ask"], "required"), (["fly"], "invalid choice"),
    ],
)
def test_bad_input_exits_2_with_one_line_naming_the_fix(args, word, capsys, offline_model):
    if "ABSENT" in args:  # a real device this machine lacks (GPU here; NPU or GPU on an AI PC without one)
        from phi3_helpers.backends.openvino import available_devices

        missing = [d for d in ("GPU", "NPU") if not any(f.startswith(d) for f in available_devices())]
        if not missing:
            pytest.skip("this machine has every OpenVINO device, so none can be missing")
        args = [missing[0] if a == "ABSENT" else a for a in args]
    with pytest.raises(SystemExit) as exit_info:
        code = main(args)
        raise SystemExit(code)
    assert exit_info.value.code == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("error:") and word in err[0], err


def test_terminal_chat_answers_turns_and_survives_bad_input(offline_model):
    script = "What is the capital of France?\n   \n/clear\n/help\nWhat is the capital of France?\n/exti\n/exit\n"
    r = subprocess.run(
        [
            sys.executable, "-m", "phi3_helpers", "chat", "--backend", "openvino", "--precision", "int4",
            "--max-new-tokens", "32",
        ],
        input=script,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("Paris") == 2
    assert r.stdout.count("assistant>") == 2  # /help and the mistyped /exti are not sent to the model
    assert "history cleared" in r.stderr and r.stderr.count("other lines are questions") == 2


def test_ctrl_c_while_an_answer_streams_stops_it_in_the_runtime(load_backend, monkeypatch):
    """The terminal's Ctrl-C arrives as KeyboardInterrupt in the reading loop: the answer ends as stopped."""
    from phi3_helpers import cli
    from stopping import STORY

    class CtrlCOnThirdWrite:
        writes = 0

        def write(self, text):
            self.writes += 1
            if self.writes == 3:
                raise KeyboardInterrupt

        def flush(self):
            pass

    llm = load_backend("openvino", "int4")
    resp = llm.generate(STORY, max_new_tokens=200)
    monkeypatch.setattr(cli.sys, "stdout", CtrlCOnThirdWrite())
    cli._print_stream(resp)
    assert resp.done and resp.metrics.finish_reason == "stopped" and resp.metrics.tokens < 200


def test_one_parser_lists_every_subcommand():
    from phi3_helpers.cli import COMMANDS, build_parser

    usage = build_parser().format_help()
    for name in ("ask", "chat", "devices", "prepare", "bench", "demo", "doctor"):
        assert name in COMMANDS and name in usage


def test_finish_reasons_are_one_word_set_with_an_explanation_each():
    from phi3_helpers.response import FINISH_REASONS

    assert list(FINISH_REASONS) == ["ended", "length", "stopped", "error"]
    assert all(isinstance(v, str) and v and "\n" not in v for v in FINISH_REASONS.values())
