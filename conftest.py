"""Test environment for tests/ and the notebooks (nbval): offline, nothing written outside the
repo and temp folders.

- HOME points at a temp folder: ONNX Runtime and OpenVINO write telemetry under ~, Jupyter,
  IPython and matplotlib their settings. Kernels started by nbval inherit all of this.
- HF_HUB_OFFLINE=1: no network; the offline model is used.
- Built models are cached in <repo>/.cache/models (PHI3_CACHE_DIR), so a warm run is fast.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent
_HOME = Path(tempfile.mkdtemp(prefix="phi3-test-home-"))
atexit.register(shutil.rmtree, _HOME, ignore_errors=True)

os.environ["HOME"] = str(_HOME)
os.environ["USERPROFILE"] = str(_HOME)
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("PHI3_CACHE_DIR", str(REPO / ".cache" / "models"))
os.environ["HF_HOME"] = str(_HOME / "hf")
os.environ["MPLCONFIGDIR"] = str(_HOME / "mpl")
os.environ["JUPYTER_CONFIG_DIR"] = str(_HOME / "jupyter")
os.environ["JUPYTER_DATA_DIR"] = str(_HOME / "jupyter-data")
os.environ["JUPYTER_RUNTIME_DIR"] = str(_HOME / "jupyter-runtime")
os.environ["IPYTHONDIR"] = str(_HOME / "ipython")
os.environ["OPENVINO_TELEMETRY_OPT_OUT"] = "1"
os.environ["TQDM_DISABLE"] = "1"
os.environ.pop("PHI3_MODEL", None)
