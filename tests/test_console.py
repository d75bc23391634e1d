"""console: notices read as information, third-party noise held back, errors still shown in full."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest

from phi3_helpers.console import PREFIX, quiet

REPO = Path(__file__).resolve().parents[1]


def test_quiet_hides_output_and_warnings_and_says_so(capfd):
    with quiet() as held:
        print("runtime chatter on stdout")
        print("runtime chatter on stderr", file=sys.stderr)
        warnings.warn("a deprecated argument", FutureWarning)
    out, err = capfd.readouterr()
    assert "chatter" not in out + err
    assert "a deprecated argument" not in out + err
    assert "runtime chatter on stdout" in held.text and "a deprecated argument" in held.text
    assert held.lines == 4  # two prints, the warning and its source line
    assert f"{PREFIX} (4 lines of runtime messages hidden" in err  # collapsed into one notice


def test_an_error_inside_quiet_shows_everything_it_held_back(capfd):
    with pytest.raises(ValueError, match="export failed"):
        with quiet():
            print("step 1 of the export")
            warnings.warn("the trace might be incorrect", UserWarning)
            raise ValueError("export failed")
    out, err = capfd.readouterr()
    assert "step 1 of the export" in err
    assert "the trace might be incorrect" in err


def test_notices_inside_quiet_still_show(capfd):
    from phi3_helpers.models import notice  # the backends' import path

    with quiet():
        notice("Exporting the model (once) ...")
        print("noise")
    out, err = capfd.readouterr()
    assert f"{PREFIX} Exporting the model (once) ..." in err  # a terminal: stderr, stdout stays for answers
    assert "noise" not in out + err


def test_logging_handlers_are_held_back_and_work_again_afterwards(capfd):
    log = logging.getLogger("phi3-test-runtime")
    log.propagate = False
    handler = logging.StreamHandler(sys.stderr)  # made before the block, like transformers' handler
    log.addHandler(handler)
    try:
        with quiet():
            log.warning("Could not infer whether the model was already converted")
            late = logging.StreamHandler(sys.stdout)  # made inside the block, like a runtime imported late
            log.addHandler(late)
        log.warning("after the block")
        out, err = capfd.readouterr()
        assert "Could not infer" not in out + err
        assert "after the block" in err and "after the block" in out  # both handlers write to real streams again
        with quiet():
            log.warning("NNCF table in a second export")  # the late handler is quiet again
        out, err = capfd.readouterr()
        assert "NNCF table" not in out + err
    finally:
        log.handlers.clear()


def test_nested_quiet_blocks_collapse_once(capfd):
    with quiet():
        with quiet():
            print("inner noise")
        print("outer noise")
    out, err = capfd.readouterr()
    assert "noise" not in out + err
    assert err.count("lines of runtime messages hidden") == 1


def test_verbose_shows_everything(capfd, monkeypatch):
    monkeypatch.setenv("PHI3_VERBOSE", "1")
    with quiet():
        print("visible runtime line")
    out, _ = capfd.readouterr()
    assert "visible runtime line" in out


@pytest.mark.slow
def test_a_real_export_inside_quiet_prints_no_tracer_or_errno_lines(tmp_path):
    """A fresh cache (the offline model linked in), a real OpenVINO int8 export, in a new process."""
    cache = tmp_path / "cache"
    (cache / "hf").mkdir(parents=True)
    source = Path(os.environ["PHI3_CACHE_DIR"]) / "hf" / "smollm2-135m-phi3"
    assert (source / "config.json").is_file(), "the offline model is built by the session fixture or `make lab`"
    (cache / "hf" / source.name).symlink_to(source, target_is_directory=True)
    script = textwrap.dedent(
        """
        from phi3_helpers.backends.openvino import export_openvino, is_complete_export
        from phi3_helpers.console import quiet
        from phi3_helpers.models import resolve_model

        model = resolve_model("smollm2-135m-phi3")
        with quiet() as held:
            folder = export_openvino(model, "int8")
        print("complete:", is_complete_export(folder))
        print("held back:", held.lines, "TracerWarning" in held.text)
        """
    )
    env = dict(os.environ, PHI3_CACHE_DIR=str(cache), HF_HUB_OFFLINE="1")
    env.pop("TQDM_DISABLE", None)  # let the runtimes print their progress bars, as in a workshop
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, done.stderr[-3000:]
    shown = done.stdout + done.stderr
    assert "complete: True" in done.stdout  # the export really ran, into the fresh cache
    assert "held back:" in done.stdout and "True" in done.stdout.split("held back:")[1]  # there was noise to hold
    for noise in ("TracerWarning", "Errno", "refs/main", "deprecated", "Statistics of the bitwidth"):
        assert noise not in shown, f"{noise!r} reached the terminal:\n{shown}"
    assert f"{PREFIX} Exporting smollm2-135m-phi3 to OpenVINO int8" in done.stderr  # our notices still show


def test_notices_in_a_notebook_are_stdout_not_red_stderr(tmp_path):
    """A real kernel: the notice arrives as a stdout stream output, so Jupyter does not draw it red."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.v4.new_notebook()
    source = textwrap.dedent(
        """
        import sys, warnings
        from phi3_helpers.console import quiet
        from phi3_helpers.models import notice

        notice("using the offline model")
        with quiet():
            print("runtime noise", file=sys.stderr)
            warnings.warn("Converting a tensor to a Python boolean", UserWarning)
        """
    )
    nb.cells = [nbformat.v4.new_code_cell(source)]
    NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(REPO)}}).execute()
    outputs = nb.cells[0].outputs
    streams = [(o.get("name"), o.get("text", "")) for o in outputs if o.get("output_type") == "stream"]
    stdout = "".join(text for name, text in streams if name == "stdout")
    assert f"{PREFIX} using the offline model\n" in stdout
    assert f"{PREFIX} (3 lines of runtime messages hidden" in stdout
    assert not [s for s in streams if s[0] == "stderr"], streams  # nothing in a red box
    assert "runtime noise" not in stdout
