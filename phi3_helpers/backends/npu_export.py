"""The export the NPU needs: 4-bit *symmetric* weights for every layer (``--weight-format int4 --sym
--ratio 1.0``), group size 128 (or -1, channel-wise, for models above about 4-5B parameters, as
Intel's "OpenVINO GenAI on NPU" guide recommends), and a check that tells a CPU export apart.
"""

from __future__ import annotations

import re
from pathlib import Path

from ..errors import InvalidOption
from ..models import ModelSource, notice
from .openvino_export import (
    ExportRecipe, export_command, export_folder, export_openvino, is_complete_export, odd_widths, recorded_recipe,
)

DEFAULT_GROUP_SIZE = 128


def npu_export_recipe(model: ModelSource, group_size: int = DEFAULT_GROUP_SIZE) -> ExportRecipe:
    """int4, symmetric, ratio 1.0 (every layer 4-bit), group-wise (128) or channel-wise (-1).

    Layers whose width is not a multiple of the group (576 in the offline model) get an adjusted
    group size (``--group-size-fallback adjust``); the export says so when it runs.
    """
    if isinstance(group_size, bool) or not isinstance(group_size, int) or not (group_size == -1 or group_size > 0):
        raise InvalidOption(
            f"group_size must be a positive whole number or -1 for channel-wise (got {group_size!r}); try 128."
        )
    fallback = "adjust" if odd_widths(model, group_size) else None
    variant = "npu" if group_size == DEFAULT_GROUP_SIZE else ("npu-cw" if group_size == -1 else f"npu-g{group_size}")
    return ExportRecipe("int4", "int4", 4, True, group_size, 1.0, fallback, variant)


def npu_export_folder(model: ModelSource, group_size: int = DEFAULT_GROUP_SIZE) -> Path:
    recipe = npu_export_recipe(model, group_size)
    return export_folder(model, recipe.precision, recipe.variant)


def _weight_types(folder: Path) -> set[str]:
    """Element types of the constants in an OpenVINO IR (``i4`` = symmetric 4-bit, ``u4`` = asymmetric)."""
    xml = Path(folder) / "openvino_model.xml"
    if not xml.is_file():
        return set()
    return set(re.findall(r'element_type="([a-z0-9]+)"', xml.read_text(errors="replace")))


def npu_export_problem(folder: Path) -> str | None:
    """Why an OpenVINO export folder is not an NPU export (None when it is, or when it cannot tell).

    The NPU wants every weight layer in symmetric 4-bit. An export made for the CPU (fp16, int8,
    asymmetric int4, or int4 with ratio below 1.0 so that some layers stay 8-bit) fails to compile
    for the NPU or runs slowly there. Checked twice: in the recorded recipe and in the IR itself.
    """
    name = Path(folder).name
    fix = "re-export with --weight-format int4 --sym --ratio 1.0 --group-size 128 (load('npu') does this for you)"
    record = recorded_recipe(folder)
    if record is not None:
        q = record.get("quantization") or {}
        bits = q.get("bits")
        if bits != 4:
            what = f"int{bits}" if bits else record.get("precision") or "float"
            return f"{name} holds {what} weights, but the NPU wants symmetric int4; {fix}."
        if not q.get("sym", False):
            return f"{name} holds asymmetric int4 weights, but the NPU wants symmetric ones; {fix}."
        ratio = q.get("ratio", 1.0)
        if ratio is not None and float(ratio) < 1.0:
            return (
                f"{name} keeps {100 - float(ratio) * 100:.0f}% of its layers in 8-bit (ratio {ratio}), "
                f"an export made for the CPU; {fix}."
            )
    types = _weight_types(folder)
    if "u4" in types:
        return f"{name} holds asymmetric 4-bit weights (u4), but the NPU wants symmetric ones; {fix}."
    if types and not types & {"i4", "nf4"}:
        return (
            f"{name} holds no 4-bit weights at all (its export did not compress them); delete {folder} "
            "and export again with --weight-format int4 --sym --ratio 1.0."
        )
    return None


def export_for_npu(model: ModelSource, group_size: int = DEFAULT_GROUP_SIZE, progress=notice) -> Path:
    """The NPU export of ``model``, cached per model and group size.

    A cached folder made with other settings is rebuilt; a folder whose IR is not NPU-ready
    gets a one-line notice (an NPU would refuse or run it slowly; a CPU still runs it).
    """
    recipe = npu_export_recipe(model, group_size)
    folder = export_folder(model, recipe.precision, recipe.variant)
    complete = is_complete_export(folder)
    want = recipe.quantization_config() or {}
    have = (recorded_recipe(folder) or {}).get("quantization") or {}
    same = all(have.get(k) == v for k, v in want.items())
    if complete and not same:
        progress(f"{folder.name} was exported with other settings; re-exporting for the NPU.")
    if not complete or not same:
        folder = export_openvino(model, recipe.precision, recipe=recipe, force=complete, progress=progress)
    problem = npu_export_problem(folder)
    if problem:
        progress(problem)
    return folder


def npu_export_command(model: ModelSource, group_size: int = DEFAULT_GROUP_SIZE) -> str:
    """The optimum-cli command for the NPU export (for the chapter and the README)."""
    recipe = npu_export_recipe(model, group_size)
    return export_command(model, recipe, export_folder(model, recipe.precision, recipe.variant))
