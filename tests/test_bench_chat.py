"""The chat benchmark's document, table and chart (timings are measured, never asserted)."""

from __future__ import annotations

import json

import pytest

from phi3_helpers.bench import chat as bench_chat


@pytest.fixture(scope="module")
def doc(offline_model):
    configs = [("onnx", "int4", None, {}, "onnx int4"), ("no-such-backend", "int4", None, {}, "missing")]
    return bench_chat.run_chat(
        turns=3, max_new_tokens=6, configs=configs, model=offline_model, speculative=False, progress=lambda s: None,
        repeats=2,
    )


def test_each_turn_is_measured_with_reuse_on_and_off(doc):
    assert [(r["label"], r["reuse"]) for r in doc["rows"]] == [("onnx int4", True), ("onnx int4", False)]
    on, off = doc["rows"]
    for row in doc["rows"]:
        assert [t["turn"] for t in row["turns"]] == [1, 2, 3]
        assert all(t["ttft_ms"] > 0 and t["tokens"] > 0 for t in row["turns"])
        # each turn is the median of two chats, each measured on its own
        assert all(len(t["ttft_runs_ms"]) == 2 and t["ttft_ms"] == sum(t["ttft_runs_ms"]) / 2 for t in row["turns"])
        # the history is sent every turn: prompts grow
        assert row["turns"][0]["prompt_tokens"] < row["turns"][1]["prompt_tokens"] < row["turns"][2]["prompt_tokens"]
    assert on["turns"][1]["reused_tokens"] >= on["turns"][0]["prompt_tokens"]  # the first turn's prompt was kept
    assert off["turns"][1]["reused_tokens"] is None
    assert doc["skipped"] and doc["skipped"][0]["label"] == "missing"
    assert bench_chat.turn_ratio(on, late=3) == round(on["turns"][2]["ttft_ms"] / on["turns"][1]["ttft_ms"], 2)


def test_table_chart_and_json(doc, tmp_path):
    table = bench_chat.chat_table(doc)
    assert "| onnx int4 | on |" in table and "| onnx int4 | off |" in table and "turn 3 TTFT" in table
    fig = bench_chat.plot_chat(doc)
    ax = fig.axes[0]
    assert len(ax.lines) == 2 and {ln.get_linestyle() for ln in ax.lines} == {"-", "--"}
    assert list(ax.lines[0].get_xdata()) == [1, 2, 3]
    path = bench_chat.write(doc, tmp_path)
    assert json.loads(path.read_text())["rows"][0]["turns"][0]["turn"] == 1 and (tmp_path / "chat.png").is_file()


def test_speculative_rows_measure_the_speedup_and_check_the_tokens(offline_model):
    rows = bench_chat._speculative_rows(offline_model, tokens=8, runs=1)
    assert [r["variant"] for r in rows][:2] == ["plain", "prompt lookup"] and "stand-in" in rows[2]["variant"]
    assert rows[0]["speedup"] == 1.0 and rows[0]["same_tokens_as_plain"]
    assert all(r["tokens"] > 0 and r["speedup"] > 0 for r in rows)


def test_bench_chat_command_writes_the_chat_document(offline_model, tmp_path, capsys):
    from phi3_helpers.cli import main

    code = main(["bench", "--chat", "--quick", "--backends", "onnx", "--tokens", "4", "--output", str(tmp_path),
                 "--model", str(offline_model.folder)])
    doc = json.loads((tmp_path / "chat.json").read_text())
    assert code == 0 and [r["reuse"] for r in doc["rows"]] == [True, False] and doc["turns"] == 4
    assert "| onnx int4 | on |" in capsys.readouterr().out
    assert {s["variant"] for s in doc["speculative"]} >= {"plain", "prompt lookup"}
