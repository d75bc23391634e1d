"""Demo mode (phi3_helpers.demo): keep a device busy with a live tokens/s readout, and Stop it.

Run on the npu backend, which on this machine (no NPU) runs on the CPU.
"""

from __future__ import annotations

import time

import pytest

from phi3_helpers import demo
from phi3_helpers.cli import main as cli_main
from phi3_helpers.errors import InvalidOption

from prompts import FRANCE


def _wait_for(cond, timeout=300.0):
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise AssertionError("condition not reached")
        time.sleep(0.05)


def test_keep_busy_runs_for_the_given_time(load_backend):
    llm = load_backend("npu")
    updates = []
    st = demo.Demo(llm, seconds=2, max_new_tokens=32).run(
        on_update=lambda s: updates.append((s.tokens, s.live_tokens_per_s))
    )
    assert st.elapsed_s >= 2 and not st.running and not st.stopped
    assert st.answers >= 1 and st.tokens > 0 and st.average_tokens_per_s > 0
    assert updates and updates[-1][0] == st.tokens  # the last update carries the totals
    assert any(rate > 0 for _, rate in updates)  # a live rate was shown while running
    assert "done" in st.line()


def test_stop_ends_the_demo_then_a_normal_answer(load_backend):
    llm = load_backend("npu")
    d = demo.Demo(llm, seconds=600)
    d.start()
    _wait_for(lambda: d.stats.tokens > 0)
    d.stop()
    assert d.wait(timeout=120)
    assert d.stats.stopped and not d.stats.running and "stopped" in d.stats.line()
    assert "Paris" in llm.ask(FRANCE, max_new_tokens=24)


def test_demo_widget_start_and_stop(load_backend):
    llm = load_backend("npu")
    box = demo.demo_widget(llm, seconds=600)
    (start, stop, secs), readout = box.children[0].children, box.children[1]
    assert not start.disabled and stop.disabled
    start.click()
    assert start.disabled and not stop.disabled and secs.disabled
    _wait_for(lambda: box.demo.stats.tokens > 0 and "tok/s" in readout.value)
    stop.click()
    assert box.demo.wait(timeout=120)
    assert "stopped" in readout.value
    assert not start.disabled and stop.disabled and not secs.disabled


def test_keep_busy_prints_a_final_line(load_backend, capsys):
    st = demo.keep_busy(load_backend("npu"), seconds=1, max_new_tokens=16)
    out = capsys.readouterr().out
    assert st.line() in out and "tok/s" in out


@pytest.mark.parametrize("seconds", [0, -5, "60", True])
def test_bad_seconds_are_refused(seconds):
    with pytest.raises(InvalidOption, match="seconds"):
        demo.Demo(None, seconds=seconds)


def test_demo_command_line(capsys):
    assert cli_main(["demo", "--backend", "npu", "--model", "smollm2-135m-phi3", "--seconds", "1"]) == 0
    out = capsys.readouterr().out
    assert "Demo on npu" in out and "tok/s" in out
    assert cli_main(["demo", "--backend", "npu", "--model", "smollm2-135m-phi3", "--device", "GPU"]) == 2


@pytest.mark.parametrize("seconds", ["abc", "0", "-5", "nan", "inf"])
def test_demo_command_line_refuses_bad_seconds_in_one_line_before_loading(seconds, capsys, monkeypatch):
    import phi3_helpers

    monkeypatch.setattr(phi3_helpers, "load", lambda *a, **k: pytest.fail("loaded a model despite bad input"))
    with pytest.raises(SystemExit) as exc:
        cli_main(["demo", "--seconds", seconds])
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2
    assert len(err.splitlines()) == 1 and "--seconds" in err and "try --seconds 60" in err, err


class _FailingStream:
    """A backend stand-in whose answer stream raises, as a runtime error (or SessionBusy) would."""

    device = "CPU"

    def __init__(self, exc: Exception):
        self.exc = exc

    def describe(self) -> str:
        return "stand-in on CPU"

    def generate(self, prompt, max_new_tokens=256):
        exc = self.exc

        class Response:
            token_ids: list = []

            def __iter__(self):
                raise exc
                yield  # pragma: no cover - makes this a generator

            def stop(self):
                pass

        return Response()


def test_an_error_in_the_stream_is_kept_and_shown():
    from phi3_helpers.errors import SessionBusy

    d = demo.Demo(_FailingStream(RuntimeError("the runtime\nfailed")), seconds=30)
    d.start()
    assert d.wait(timeout=30)
    st = d.stats
    assert st.error == "RuntimeError: the runtime failed" and not st.running and not st.stopped
    assert "failed: RuntimeError: the runtime failed" in st.line()

    st = demo.Demo(_FailingStream(SessionBusy("busy; wait for the answer")), seconds=30).run()
    assert st.error.startswith("SessionBusy: busy") and "failed" in st.line()


def test_the_widget_shows_an_error_from_the_stream():
    box = demo.demo_widget(_FailingStream(RuntimeError("the <runtime> failed")), seconds=30)
    (start, stop, _secs), readout = box.children[0].children, box.children[1]
    start.click()
    assert box.demo.wait(timeout=30)
    _wait_for(lambda: "failed" in readout.value, timeout=10)
    assert "RuntimeError: the &lt;runtime&gt; failed" in readout.value
    assert not start.disabled and stop.disabled


def test_demo_command_line_reports_a_stream_error_and_an_interrupted_load(capsys, monkeypatch):
    import phi3_helpers

    monkeypatch.setattr(phi3_helpers, "load", lambda *a, **k: _FailingStream(RuntimeError("the runtime failed")))
    assert cli_main(["demo", "--seconds", "5"]) == 1
    captured = capsys.readouterr()
    assert "failed: RuntimeError: the runtime failed" in captured.out
    assert captured.err.strip() == "error: the demo stopped because generation failed: RuntimeError: the runtime failed"

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(phi3_helpers, "load", interrupted)
    assert cli_main(["demo", "--seconds", "5"]) == 130
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("interrupted"), err
