"""Demo mode (phi3_helpers.demo): keep a device busy with a live tokens/s readout, and Stop it.

Run on the npu backend, which on this machine (no NPU) runs on the CPU.
"""

from __future__ import annotations

import time

import pytest

from phi3_helpers import demo
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
    st = demo.Demo(llm, seconds=2, max_new_tokens=32).run(on_update=lambda s: updates.append((s.tokens, s.live_tokens_per_s)))
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
def test_bad_seconds_are_refused(load_backend, seconds):
    with pytest.raises(InvalidOption, match="seconds"):
        demo.Demo(load_backend("npu"), seconds=seconds)


def test_demo_command_line(capsys):
    assert demo.main(["--backend", "npu", "--model", "smollm2-135m-phi3", "--seconds", "1"]) == 0
    out = capsys.readouterr().out
    assert "Demo on npu" in out and "tok/s" in out
    assert demo.main(["--backend", "npu", "--model", "smollm2-135m-phi3", "--device", "GPU"]) == 2
