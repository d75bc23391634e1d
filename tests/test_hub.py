"""The real-Phi-3 path against a real hub server (olah on loopback), with the real huggingface_hub client.

The served repos carry the real repo ids and layouts but hold the offline model's weights
(smollm2-135m-phi3 exported to OpenVINO int4 and ONNX Runtime GenAI int4): offline-model weights
in the real layout, not Phi-3. Each has a README saying so. ``PHI3_HUB_REVISION=main`` because the
stand-ins are new commits, not the publishers' pinned ones.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from hub_server import REPO, HubServer, OlahUnavailable, add_repo, free_port, olah_cli
from phi3_helpers.models import hub

OV_REPO = "OpenVINO/Phi-3-mini-4k-instruct-int4-ov"
ONNX_SUB = "cpu_and_mobile/cpu-int4-rtn-block-32-acc-level-4"
ONNX_NAME = "phi3-mini-4k-instruct-cpu-int4-rtn-block-32-acc-level-4.onnx"
QUESTION = "What is the capital of France?"


# -- the served repos (built once per session from the exports in .cache/models) ----------------
def _onnx_in_real_names(src: Path, dest: Path) -> dict[str, Path]:
    """The GenAI folder with Microsoft's file names (the graph's external-data location rewritten)."""
    import onnx

    dest.mkdir(parents=True, exist_ok=True)
    graph = onnx.load(str(src / "model.onnx"), load_external_data=False)
    for t in graph.graph.initializer:
        for e in t.external_data:
            if e.key == "location":
                e.value = ONNX_NAME + ".data"
    onnx.save(graph, str(dest / ONNX_NAME))
    cfg = json.loads((src / "genai_config.json").read_text())
    cfg["model"]["decoder"]["filename"] = ONNX_NAME
    (dest / "genai_config.json").write_text(json.dumps(cfg, indent=4))
    files = {ONNX_NAME: dest / ONNX_NAME, "genai_config.json": dest / "genai_config.json"}
    files[ONNX_NAME + ".data"] = src / "model.onnx.data"
    for f in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        files[f] = src / f
    return files


@pytest.fixture(scope="session")
def mirrors(tmp_path_factory, offline_model):
    try:
        olah_cli()
    except OlahUnavailable as exc:
        pytest.skip(str(exc))
    from phi3_helpers.backends.onnx_build import build_onnx_model
    from phi3_helpers.backends.openvino import export_openvino

    root = tmp_path_factory.mktemp("hub")
    mirrors = root / "mirrors"
    ov = export_openvino(offline_model, "int4")
    ov_files = {f.name: f for f in ov.iterdir() if f.name != "phi3_helpers_export.json"}
    ov_files["configuration_phi3.py"] = "# remote code the course must never download\n"
    add_repo(mirrors, OV_REPO, ov_files)
    ort = build_onnx_model(offline_model, "int4", "cpu")
    real = _onnx_in_real_names(ort, root / "onnx-renamed")
    files = {f"{ONNX_SUB}/{k}": v for k, v in real.items()}
    files[f"{ONNX_SUB}/config.json"] = offline_model.folder / "config.json"
    files[f"{ONNX_SUB}/configuration_phi3.py"] = "# remote code the course must never download\n"
    files["cpu_and_mobile/cpu-int4-rtn-block-32/decoy.onnx.data"] = "another folder of the repo: never fetched\n"
    dml = build_onnx_model(offline_model, "int4", "dml")  # built for DirectML here; runs on the CPU with a notice
    for f in dml.iterdir():
        if f.name != "phi3_helpers_build.json":
            files[f"{hub.ONNX[('int4', 'dml')].subfolder}/{f.name}"] = f
    files[f"{hub.ONNX[('int4', 'dml')].subfolder}/config.json"] = offline_model.folder / "config.json"
    add_repo(mirrors, hub.ONNX[("int4", "cpu")].repo_id, files, sub=ONNX_SUB)
    return root


@pytest.fixture
def server(mirrors, tmp_path):
    with HubServer(tmp_path / "srv", mirrors / "mirrors") as srv:
        yield srv


#: huggingface_hub's timeouts (10 s) are too short for the loopback server on a busy 2-core machine.
SLOW_MACHINE = {"HF_HUB_DOWNLOAD_TIMEOUT": "120", "HF_HUB_ETAG_TIMEOUT": "60"}


def _env(srv_or_endpoint, home: Path, offline: bool = False) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in {"HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"}}
    endpoint = srv_or_endpoint if isinstance(srv_or_endpoint, str) else srv_or_endpoint.endpoint
    env.update(HF_ENDPOINT=endpoint, HF_HOME=str(home), PHI3_HUB_REVISION="main", **SLOW_MACHINE)
    if offline:
        env["HF_HUB_OFFLINE"] = "1"
    return env


def _cli(env: dict, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "phi3_helpers", *args], env=env, capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)


def _fetched(srv: HubServer) -> list[str]:
    return [r.split(" ", 1)[1] for r in srv.requests() if r.startswith("GET ") and "/resolve/" in r]


@pytest.fixture
def hf_home(tmp_path, monkeypatch, server):
    """In-process: huggingface_hub's settings as HF_ENDPOINT / HF_HOME would set them, for this server."""
    from huggingface_hub import constants

    home = tmp_path / "hf"
    monkeypatch.setenv(hub.REVISION_ENV, "main")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(home / "hub"))
    for name, seconds in SLOW_MACHINE.items():
        monkeypatch.setattr(constants, name, int(seconds))
    _point_at(monkeypatch, server.endpoint)
    return home


def _point_at(monkeypatch, endpoint: str) -> None:
    from huggingface_hub import constants

    template = constants.HUGGINGFACE_CO_URL_TEMPLATE.replace(constants.ENDPOINT, endpoint)
    monkeypatch.setattr(constants, "ENDPOINT", endpoint)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", template)


# -- the plan ---------------------------------------------------------------------------------
@pytest.mark.parametrize("backend, repo, big", [
    ("openvino", OV_REPO, "openvino_model.bin"),
    ("onnx", hub.ONNX[("int4", "cpu")].repo_id, f"{ONNX_SUB}/{ONNX_NAME}.data"),
])
def test_plan_of_the_stand_in_repos_lists_repo_files_sizes_and_downloads_nothing(
    server, mirrors, tmp_path, backend, repo, big
):
    args = ("prepare", "--backend", backend, "--precision", "int4", "--model", "phi3-mini", "--plan")
    res = _cli(_env(server, tmp_path / "hf"), *args)
    assert res.returncode == 0, res.stderr
    size = (mirrors / "mirrors" / "models" / repo / big).stat().st_size
    assert repo in res.stdout and big in res.stdout and f"{size:,d}" in res.stdout
    assert "configuration_phi3.py" not in res.stdout and "decoy" not in res.stdout and "directml" not in res.stdout
    assert "free" in res.stdout
    assert _fetched(server) == [] and not [p for p in (tmp_path / "hf").rglob("*") if p.is_file()]


# -- download, answer, answer offline ------------------------------------------------------------
@pytest.mark.parametrize("backend, device, repo, only", [
    ("openvino", "CPU", OV_REPO, ""),
    ("onnx", "cpu", hub.ONNX[("int4", "cpu")].repo_id, ONNX_SUB),
    ("onnx", "dml", hub.ONNX[("int4", "dml")].repo_id, hub.ONNX[("int4", "dml")].subfolder),
])
def test_phi3_mini_stand_in_downloads_only_prequantized_files_answers_then_answers_offline(
    server, tmp_path, backend, device, repo, only
):
    env = _env(server, tmp_path / "hf")
    ask = ("ask", QUESTION, "--backend", backend, "--device", device, "--model", "phi3-mini", "--max-new-tokens", "24")
    res = _cli(env, *ask)
    assert res.returncode == 0, res.stderr
    assert "Paris" in res.stdout
    got = _fetched(server)
    assert got and all(p.startswith(f"/{repo}/resolve/") for p in got)
    assert all(p.split("/resolve/", 1)[1].split("/", 1)[1].startswith(only) for p in got)  # that folder only
    assert not [p for p in got if p.endswith((".safetensors", ".py", "decoy.onnx.data"))]
    plan = f"[phi3_helpers] Downloading {repo}"
    assert [ln for ln in res.stderr.splitlines() if ln.startswith(plan)]  # the one-line plan first
    server.stop()
    res = _cli(_env(server, tmp_path / "hf", offline=True), *ask)
    assert res.returncode == 0, res.stderr
    assert "Paris" in res.stdout


def test_bench_on_phi3_mini_measures_the_prequantized_folder_and_never_fetches_the_checkpoint(server, tmp_path):
    """The bench plans each backend's own folder by name (the stand-in hub has no checkpoint: fetching it fails)."""
    out = tmp_path / "bench"
    args = ("bench", "--quick", "--backends", "openvino", "--precisions", "int4", "--devices", "CPU",
            "--model", "phi3-mini", "--runs", "1", "--tokens", "4", "--long-tokens", "64", "--output", str(out))
    res = _cli(_env(server, tmp_path / "hf"), *args, timeout=1200)
    assert res.returncode == 0, res.stderr
    got = _fetched(server)
    assert got and all(p.startswith(f"/{OV_REPO}/resolve/") for p in got)
    doc = json.loads((out / "bench.json").read_text())
    assert doc["model"] == "phi3-mini"
    assert [(r["backend"], r["status"]) for r in doc["results"]] == [("openvino", "ok")]
    assert OV_REPO in doc["results"][0]["folder"].replace(os.sep, "/").replace("--", "/")
    server.stop()  # offline: openvino's folder is cached, transformers' checkpoint never was
    args = (*args[:3], "openvino,transformers", "--precisions", "int4,fp32", *args[6:])
    res = _cli(_env(server, tmp_path / "hf", offline=True), *args, timeout=1200)
    assert res.returncode == 0, res.stderr
    doc = json.loads((out / "bench.json").read_text())
    assert [(r["backend"], r["status"]) for r in doc["results"]] == [("openvino", "ok")]
    skipped = [s for s in doc["skipped"] if s["backend"] == "transformers"]
    assert skipped and "microsoft/Phi-3-mini-4k-instruct" in skipped[0]["reason"]


def _size(path: Path) -> int:
    """A file's size, 0 once it is gone (a finished download renames its .incomplete file)."""
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def test_interrupted_download_is_never_taken_as_complete_and_the_next_run_finishes(mirrors, tmp_path):
    home = tmp_path / "hf"
    srv = HubServer(tmp_path / "srv1", mirrors / "mirrors").start()
    prepare = [sys.executable, "-m", "phi3_helpers", "prepare", "--backend", "openvino", "--model", "phi3-mini"]
    proc = subprocess.Popen(prepare,
                            env=_env(srv, home), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:  # stop the server while openvino_model.bin is half-way
            part = [p for p in home.rglob("*.incomplete") if _size(p) > 5 * 10**6]
            if part:
                break
            time.sleep(0.02)
        assert part, "the download never started"
    finally:
        srv.stop()
    out, err = proc.communicate(timeout=120)
    last = err.strip().splitlines()[-1]  # before it: the one-line plan and huggingface_hub's own warnings
    assert proc.returncode == 2 and last.startswith("error: the download stopped") and "again" in last, err
    res = _cli(_env(srv, home, offline=True), "ask", QUESTION, "--backend", "openvino", "--model", "phi3-mini")
    assert res.returncode == 2 and "not finished" in res.stderr and res.stdout == ""
    with HubServer(tmp_path / "srv2", mirrors / "mirrors") as srv2:
        res = _cli(_env(srv2, home), "ask", QUESTION, "--backend", "openvino", "--model", "phi3-mini",
                   "--max-new-tokens", "24")
    assert res.returncode == 0 and "Paris" in res.stdout, res.stderr
    assert not list(home.rglob("*.incomplete"))


def test_hub_unreachable_and_nothing_cached_gives_the_offline_model_with_one_notice(tmp_path, monkeypatch, capsys,
                                                                                    offline_model):
    from huggingface_hub import constants

    from phi3_helpers.models import resolve_prepared

    monkeypatch.delenv("PHI3_MODEL", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    nobody = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    _point_at(monkeypatch, nobody)
    m = resolve_prepared(None, "openvino", "int4")
    assert m.name == "smollm2-135m-phi3" and m.folder == offline_model.folder
    err = capsys.readouterr().err
    assert nobody in err and "offline model" in err and err.count("\n") == 1


# -- bad input ---------------------------------------------------------------------------------
def test_unknown_repo_on_the_mirror_is_one_line_naming_the_fix(hf_home):
    with pytest.raises(hub.HubError, match="no such repo") as err:
        hub.fetch(hub.HubFolder("OpenVINO/Phi-3-mini-4k-instruct-int3-ov", ("*.json",)))
    assert "\n" not in str(err.value) and "HF_ENDPOINT" in str(err.value)


def test_unknown_subfolder_on_the_mirror_is_one_line_naming_the_fix(hf_home):
    folder = hub.HubFolder(hub.ONNX[("int4", "cpu")].repo_id, ("*.onnx",), "cpu_and_mobile/cpu-int4-nope")
    with pytest.raises(hub.HubError, match="no files under cpu_and_mobile/cpu-int4-nope"):
        hub.fetch(folder)


@pytest.mark.parametrize("status", [404, 500])
def test_a_mirror_answering_an_http_error_is_one_line(tmp_path, monkeypatch, status):
    from huggingface_hub import constants

    class Answer(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(status)
            self.end_headers()

        do_HEAD = do_POST = do_GET

        def log_message(self, *a):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Answer)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
        _point_at(monkeypatch, f"http://127.0.0.1:{httpd.server_address[1]}")
        with pytest.raises(hub.HubError) as err:
            hub.fetch(hub.OPENVINO["int4"])
    finally:
        httpd.shutdown()
    msg = str(err.value)
    assert (str(status) in msg or "no such repo" in msg) and "\n" not in msg


def test_a_disk_too_small_is_refused_before_downloading_with_the_sizes(hf_home, server, monkeypatch):
    monkeypatch.setattr(hub, "free_bytes", lambda path: 10**6)
    with pytest.raises(hub.DiskTooSmall, match=r"needs 1\d\d\.\d MB but only 1\.0 MB is free"):
        hub.fetch(hub.OPENVINO["int4"])
    assert _fetched(server) == []


@pytest.mark.parametrize("damage", ["missing", "truncated"])
def test_a_damaged_cached_folder_is_refused_offline_and_repaired_online(hf_home, server, monkeypatch, damage):
    from huggingface_hub import constants

    folder = hub.OPENVINO["int4"]
    path = hub.fetch(folder, progress=lambda *_: None)
    target = path / "openvino_model.bin"
    size = target.stat().st_size
    if damage == "missing":
        target.unlink()
    else:
        blob = target.resolve()
        blob.write_bytes(blob.read_bytes()[: size // 2])
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(hub.DownloadIncomplete) as err:
        hub.fetch(folder)
    msg = str(err.value)
    assert f"openvino_model.bin is {damage}" in msg and "run the same command again" in msg and "\n" not in msg
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    again = hub.fetch(folder, progress=lambda *_: None)
    assert (again / "openvino_model.bin").stat().st_size == size
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert hub.fetch(folder) == again  # complete again, from the cache
