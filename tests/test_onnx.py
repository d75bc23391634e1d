"""The onnx backend (ONNX Runtime GenAI) on the offline model, and its provider choice.

The provider choice is a pure function of the installed packages, so each case (DirectML,
CUDA, CPU, a GPU asked where none is installed) is proven here by passing the package names;
nothing of the runtime is faked. Everything else runs the real runtime on the CPU.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from phi3_helpers import load
from phi3_helpers.backends.onnx_provider import (
    GENAI_PACKAGES, choose_provider, device_report, installed_packages, package_conflicts,
)
from phi3_helpers.backends.onnx_build import built_for, check_onnx_folder
from phi3_helpers.errors import (
    BackendUnavailable, DeviceUnavailable, InvalidOption, ModelFolderError, PromptTooLong, UnknownDevice,
    UnknownPrecision,
)

from prompts import FRANCE, PROMPTS

#: These tests describe a machine without DirectML (this one); on a Windows AI PC with
#: onnxruntime-genai-directml installed they do not apply.
without_directml = pytest.mark.skipif(
    GENAI_PACKAGES["dml"] in installed_packages(),
    reason="onnxruntime-genai-directml is installed here: this test is for a machine without DirectML",
)
CPU_ONLY = {"onnxruntime-genai", "onnxruntime"}
DIRECTML = {"onnxruntime-genai-directml", "onnxruntime-directml"}
CUDA = {"onnxruntime-genai-cuda", "onnxruntime-gpu"}


# -- provider choice: every case, by the installed packages ----------------------------------------
@pytest.mark.parametrize(
    "installed, device, provider, why",
    [
        (DIRECTML, None, "dml", "onnxruntime-genai-directml is installed"),
        (CUDA, None, "cuda", "onnxruntime-genai-cuda is installed"),
        (CPU_ONLY, None, "cpu", "only the CPU package onnxruntime-genai"),
        (CPU_ONLY, "auto", "cpu", "only the CPU package"), (DIRECTML, "dml", "dml", "DirectML was asked for"),
        (DIRECTML, "DirectML", "dml", "DirectML was asked for"), (CUDA, "CUDA", "cuda", "CUDA was asked for"),
        (DIRECTML, "gpu", "dml", "DirectML was asked for"), (CUDA, "gpu", "cuda", "CUDA was asked for"),
        (DIRECTML, "cpu", "cpu", "the CPU was asked for"),
    ],
)
def test_provider_follows_the_installed_package_and_the_device_asked(installed, device, provider, why):
    choice = choose_provider(device, installed)
    assert choice.provider == provider
    assert why in choice.reason
    assert not choice.fell_back
    assert "\n" not in choice.notice and choice.notice.startswith("ONNX Runtime GenAI runs on ")


@pytest.mark.parametrize(
    "device, package",
    [("dml", "onnxruntime-genai-directml"), ("cuda", "onnxruntime-genai-cuda"), ("gpu", "onnxruntime-genai-directml")],
)
def test_a_gpu_asked_where_its_package_is_missing_falls_back_to_cpu_or_fails_clearly(device, package):
    choice = choose_provider(device, CPU_ONLY)
    assert choice.provider == "cpu" and choice.fell_back
    assert package in choice.reason and "falling back to the CPU" in choice.reason
    with pytest.raises(DeviceUnavailable) as err:
        choose_provider(device, CPU_ONLY, fallback_to_cpu=False)
    msg = str(err.value)
    assert package in msg and "device='cpu'" in msg and "\n" not in msg


def test_no_genai_package_and_unknown_devices_are_refused_with_the_fix():
    with pytest.raises(BackendUnavailable, match="pip install"):
        choose_provider(None, {"onnxruntime"})
    with pytest.raises(UnknownDevice, match="npu or openvino backend"):
        choose_provider("NPU", CPU_ONLY)
    with pytest.raises(UnknownDevice, match="auto, cpu, dml"):
        choose_provider("tpu", CPU_ONLY)


def test_known_package_conflicts_are_named():
    assert package_conflicts(CPU_ONLY) == [] and package_conflicts(DIRECTML) == []
    (mixed,) = package_conflicts(DIRECTML | {"onnxruntime"})
    assert "Specified provider is not supported" in mixed and "pip uninstall onnxruntime" in mixed
    (two,) = package_conflicts({"onnxruntime-genai", "onnxruntime-genai-directml"})
    assert "keep only one" in two


@without_directml
def test_this_machine_has_the_cpu_package_and_the_report_says_why_dml_is_absent():
    have = installed_packages()
    assert GENAI_PACKAGES["cpu"] in have and choose_provider(None, have).provider == "cpu"
    rows = {r["device"]: r for r in device_report()}
    assert set(rows) >= {"DML", "CUDA", "CPU"}
    for r in rows.values():
        assert set(r) == {"backend", "device", "available", "detail"} and r["backend"] == "onnx"
    assert rows["CPU"]["available"] and "onnxruntime-genai" in rows["CPU"]["detail"]
    assert not rows["DML"]["available"] and "onnxruntime-genai-directml is not installed" in rows["DML"]["detail"]


# -- the runtime ----------------------------------------------------------------------------------
def test_fp32_greedy_tokens_equal_transformers_fp32(load_backend):
    ref = load_backend("transformers", "fp32")
    onnx = load_backend("onnx", "fp32")
    assert onnx.device == "CPU" and onnx.precision == "fp32"
    for prompt in PROMPTS:
        want = ref.generate(prompt, max_new_tokens=32).token_ids
        got = onnx.generate(prompt, max_new_tokens=32).token_ids
        assert got == want, prompt


def test_int4_answers_the_france_question_with_paris_streamed_with_metrics(load_backend):
    llm = load_backend("onnx", "int4")
    resp = llm.generate(FRANCE, max_new_tokens=24)
    pieces = list(resp)
    assert len(pieces) > 1  # streamed, not one block
    assert "Paris" in "".join(pieces) == resp.text()
    m = resp.metrics
    assert m.tokens == len(resp.token_ids) > 1 and m.prompt_tokens > 0
    assert m.ttft_s > 0 and m.tokens_per_s > 0 and m.finish_reason in {"ended", "length"}
    record = json.loads((Path(llm.prepared_folder) / "phi3_helpers_build.json").read_text())
    assert record["precision"] == "int4" and record["target"] == "cpu"
    # the record says what the graph is: with fuse_mlp_gate_up (0.18's builder) each MLP's gate and up projections
    # are one int4 MatMul (then a Split), otherwise two
    import onnx

    graph = onnx.load(str(Path(llm.prepared_folder) / "model.onnx"), load_external_data=False).graph
    mlp = [n.name for n in graph.node if n.op_type == "MatMulNBits" and "/mlp/" in n.name]
    layers = json.loads((llm.model.folder / "config.json").read_text())["num_hidden_layers"]
    fused = "fuse_mlp_gate_up=true" in record["options"]
    assert sum("/gate_up_proj/" in n for n in mlp) == layers * fused and len(mlp) == (3 - fused) * layers


# Stop mid-answer, then a normal answer in the same chat: tests/test_backends.py (onnx is one of its cases).


@without_directml
def test_a_folder_built_for_directml_loads_on_cpu_here_with_a_notice(offline_model, capsys):
    llm = load("onnx", model=offline_model, precision="int4", device="dml")
    err = capsys.readouterr().err
    assert "DirectML was asked for, but onnxruntime-genai-directml is not installed" in err
    assert "built for DirectML and runs on the CPU here" in err
    assert llm.device == "CPU" and llm.plan.settings["built_for"] == "dml" and llm.plan.settings["choice"].fell_back
    assert built_for(check_onnx_folder(llm.prepared_folder)) == "dml"
    assert "Paris" in llm.ask(FRANCE, max_new_tokens=16)
    with pytest.raises(DeviceUnavailable, match="onnxruntime-genai-directml"):
        load("onnx", model=offline_model, precision="int4", device="dml", fallback_to_cpu=False)


# -- bad input --------------------------------------------------------------------------------------
def _copy_of(folder: Path, dest: Path, skip: tuple[str, ...] = ()) -> Path:
    """A GenAI folder that links to the built one's files (the big ones are not copied)."""
    dest.mkdir()
    for f in folder.iterdir():
        if f.name not in skip:
            (dest / f.name).symlink_to(f)
    return dest


def test_a_folder_without_genai_config_is_refused(load_backend, tmp_path):
    built = Path(load_backend("onnx", "int4").prepared_folder)
    broken = _copy_of(built, tmp_path / "no-config", skip=("genai_config.json",))
    with pytest.raises(ModelFolderError, match="has no genai_config.json") as err:
        load("onnx", model=str(broken))
    assert "\n" not in str(err.value)


def test_a_ready_folder_loads_directly_and_keeps_its_precision(load_backend, tmp_path):
    built = Path(load_backend("onnx", "int4").prepared_folder)
    ready = _copy_of(built, tmp_path / "ready")
    llm = load("onnx", model=str(ready))
    assert llm.precision == "int4" and llm.prepared_folder == ready.resolve()
    assert "Paris" in llm.ask(FRANCE, max_new_tokens=16)
    with pytest.raises(UnknownPrecision, match="holds a int4 model"):
        load("onnx", model=str(ready), precision="fp32")


def test_a_folder_built_for_another_provider(load_backend, tmp_path, capsys):
    built = Path(load_backend("onnx", "int4").prepared_folder)
    other = _copy_of(built, tmp_path / "built-for-cuda", skip=("genai_config.json",))
    cfg = json.loads((built / "genai_config.json").read_text())
    cfg["model"]["decoder"]["session_options"]["provider_options"] = [{"cuda": {"enable_cuda_graph": "0"}}]
    (other / "genai_config.json").write_text(json.dumps(cfg))
    with pytest.raises(DeviceUnavailable, match="was built for CUDA, which is not installed here") as err:
        load("onnx", model=str(other), device="cpu", fallback_to_cpu=False)
    assert "target='cpu'" in str(err.value)
    capsys.readouterr()
    llm = load("onnx", model=str(other))  # by default it runs on the CPU, and says so
    assert "built for CUDA and runs on the CPU here" in capsys.readouterr().err
    assert "Paris" in llm.ask(FRANCE, max_new_tokens=16)


def test_a_prompt_over_the_context_is_refused_and_the_chat_trims_old_turns(load_backend, capsys):
    llm = load_backend("onnx", "int4")
    limit = llm.context_length
    assert limit == 8192  # genai_config.json of the offline model
    long_text = "tree " * (limit + 100)
    with pytest.raises(PromptTooLong, match=f"at most {limit}"):
        llm.generate(long_text)
    chat = llm.chat()
    filler = "tree " * (limit // 3)
    chat.history = [
        m for _ in range(3) for m in ({"role": "user", "content": filler}, {"role": "assistant", "content": "ok"})
    ]
    resp = chat.ask(FRANCE, max_new_tokens=8)
    assert any("dropped the" in n for n in resp.notices)
    assert "dropped the" in capsys.readouterr().err
    resp.text()
    assert resp.error is None and resp.metrics.finish_reason in {"ended", "length"} and resp.metrics.tokens >= 1
    assert resp.metrics.prompt_tokens <= limit - 8 and len(chat.history) == 6  # 2 old turns + this one


def test_invalid_options_are_refused_with_the_fix(load_backend, offline_model):
    llm = load_backend("onnx", "int4")
    with pytest.raises(InvalidOption, match="max_new_tokens"):
        llm.generate(FRANCE, max_new_tokens=0)
    with pytest.raises(InvalidOption, match="unknown option 'beams'"):
        llm.generate(FRANCE, beams=2)
    with pytest.raises(InvalidOption, match="top_p"):
        llm.generate(FRANCE, top_p=2)
    with pytest.raises(UnknownPrecision, match="int4, fp16, fp32"):
        load("onnx", model=offline_model, precision="int8")
    with pytest.raises(UnknownPrecision, match="use precision int4 or fp32"):
        load("onnx", model=offline_model, precision="fp16", device="cpu")
    with pytest.raises(UnknownDevice, match="cpu, dml or cuda"):
        load("onnx", model=offline_model, target="tpu")
    with pytest.raises(InvalidOption, match="threads"):
        load("onnx", model=offline_model, threads=0)
    with pytest.raises(InvalidOption, match="prebuilt=True is only for phi3-mini"):
        load("onnx", model=offline_model, prebuilt=True)  # built for the CPU here
    with pytest.raises(InvalidOption, match="prebuilt=True is only for phi3-mini"):
        load("onnx", model=offline_model, device="dml", prebuilt=True)


def test_sampling_options_reach_the_runtime(load_backend, monkeypatch):
    import onnxruntime_genai as og

    calls = []

    class SpyParams(og.GeneratorParams):  # the real class (og.Generator accepts it); records the options
        def set_search_options(self, **options):
            calls.append(options)
            super().set_search_options(**options)

    monkeypatch.setattr(og, "GeneratorParams", SpyParams)
    llm = load_backend("onnx", "int4")
    resp = llm.generate(FRANCE, temperature=0.7, top_p=0.9, max_new_tokens=12)
    assert resp.text().strip() and 0 < resp.metrics.tokens <= 12
    (sampled,) = calls
    assert (
        sampled["do_sample"] is True
        and sampled["temperature"] == pytest.approx(0.7)
        and sampled["top_p"] == pytest.approx(0.9)
    )
    # with KV-cache reuse one generator holds several turns (room for this answer and more, not the whole context:
    # its KV buffer is allocated whole) and the backend counts max_new_tokens itself
    assert resp.metrics.prompt_tokens + 12 < sampled["max_length"] < llm.context_length
    calls.clear()
    llm.generate(FRANCE, max_new_tokens=4).text()  # greedy: no sampling options reach the runtime
    (greedy,) = calls
    assert greedy["do_sample"] is False and "temperature" not in greedy and "top_p" not in greedy
    # each generator gets its seed from Python: unseeded, ORT GenAI reads std::random_device 624 times (docs/tuning.md)
    seeds = [c["random_seed"] for c in (sampled, greedy)]
    assert all(isinstance(s, int) and 0 <= s < 2**31 for s in seeds) and seeds[0] != seeds[1]


def test_a_failed_build_says_why_and_leaves_nothing_behind(offline_model, tmp_path, monkeypatch):
    from phi3_helpers.backends.onnx_build import build_onnx_model, onnx_folder
    from phi3_helpers.errors import Phi3Error
    from phi3_helpers.models import ModelSource

    monkeypatch.setenv("PHI3_CACHE_DIR", str(tmp_path / "cache"))
    odd = tmp_path / "odd-model"
    odd.mkdir()
    for f in offline_model.folder.iterdir():
        if f.name != "config.json":
            (odd / f.name).symlink_to(f)
    config = json.loads((offline_model.folder / "config.json").read_text())
    config["architectures"] = ["NoSuchModelForCausalLM"]
    (odd / "config.json").write_text(json.dumps(config))
    source = ModelSource("odd-model", odd)
    with pytest.raises(Phi3Error, match="the ONNX model builder failed") as err:
        build_onnx_model(source, "int4", "cpu")
    assert "\n" not in str(err.value)
    out = onnx_folder(source, "int4", "cpu")
    assert not out.exists() and list(out.parent.iterdir()) == []  # no half-built folder, no scratch left


def test_the_build_passes_only_the_options_the_installed_builder_knows(offline_model, monkeypatch):
    """An older builder ignores an option it does not know (the DirectML package's 0.13.1 has no fuse_mlp_gate_up),
    and a user's model is not fused (the builder refuses that for pre-quantized weights)."""
    import onnxruntime_genai as og

    from phi3_helpers.backends import onnx_build
    from phi3_helpers.models import ModelSource

    known = onnx_build.builder_options(offline_model)
    if tuple(int(x) for x in og.__version__.split(".")[:2]) >= (0, 18):  # the course's CPU path fuses gate and up
        assert known == ["prune_lm_head=true", "fuse_mlp_gate_up=true"]
    assert known[0] == "prune_lm_head=true"  # in every builder the course pins
    assert onnx_build.builder_options(ModelSource("my-model", offline_model.folder)) == ["prune_lm_head=true"]
    monkeypatch.setattr(onnx_build, "BUILDER_OPTIONS", (*onnx_build.BUILDER_OPTIONS, "no_such_builder_option=true"))
    assert onnx_build.builder_options(offline_model) == known
    cmd = onnx_build.builder_command("in", "out", "int4", "cpu", known)
    assert cmd[cmd.index("--extra_options") + 1:] == known
    assert "--extra_options" not in onnx_build.builder_command("in", "out", "int4", "cpu", [])


@pytest.fixture
def cached_copy(load_backend, offline_model, tmp_path, monkeypatch):
    """The session's real int4 CPU build, copied into a fresh cache."""
    import shutil

    from phi3_helpers.backends.onnx_build import onnx_folder

    built = Path(load_backend("onnx", "int4").prepared_folder)
    monkeypatch.setenv("PHI3_CACHE_DIR", str(tmp_path))
    copy = onnx_folder(offline_model, "int4", "cpu")
    shutil.copytree(built, copy)
    return copy


def test_a_cached_build_is_built_again_only_for_an_option_it_lacks(cached_copy, offline_model):
    """A folder built with every option this builder knows (and more, by a newer one) is kept; one without some is
    built again, and the notice names the ones it lacks."""
    from phi3_helpers.backends.onnx_build import BUILD_RECORD, build_onnx_model, builder_options

    opts = builder_options(offline_model)
    record = json.loads((cached_copy / BUILD_RECORD).read_text())
    cases = [([*opts, "from_a_newer_builder=true"], None), ([], " ".join(opts))]
    if len(opts) > 1:  # a folder built before the fusion (0.18's builder): built again for it alone
        cases.append(([opts[0]], " ".join(opts[1:])))
    for options, lacks in cases:
        said: list[str] = []
        (cached_copy / BUILD_RECORD).write_text(json.dumps(dict(record, options=options)))
        assert build_onnx_model(offline_model, "int4", "cpu", progress=said.append) == cached_copy
        assert [m for m in said if "out of date" in m] == ([] if lacks is None else [
            f"The cached ONNX folder {cached_copy} is out of date (built without {lacks}); building it again."])
        assert json.loads((cached_copy / BUILD_RECORD).read_text())["options"] == (options if lacks is None else opts)


def test_a_damaged_cached_build_is_built_again(cached_copy, offline_model):
    """The session's real int4 CPU build, copied into a fresh cache and truncated after it was built."""
    from phi3_helpers.backends.onnx_build import BUILD_RECORD, build_onnx_model, damaged_files

    if "sizes" not in json.loads((cached_copy / BUILD_RECORD).read_text()):  # a cache from an older version
        build_onnx_model(offline_model, "int4", "cpu", rebuild=True)
    want = json.loads((cached_copy / BUILD_RECORD).read_text())["sizes"]["model.onnx.data"]  # the build records sizes
    with open(cached_copy / "model.onnx.data", "r+b") as fh:
        fh.truncate(want // 2)
    assert damaged_files(cached_copy) == ["model.onnx.data"]
    folder = build_onnx_model(offline_model, "int4", "cpu")  # built again, atomically
    assert folder == cached_copy and not damaged_files(folder)
    assert (folder / "model.onnx.data").stat().st_size == want
    assert "Paris" in load("onnx", model=offline_model, precision="int4").ask("What is the capital of France?")
