"""The export the NPU needs: 4-bit *symmetric* weights for every layer (``--weight-format int4 --sym --ratio 1.0``),
group size 128 (or -1, channel-wise, above about 4-5B parameters, as Intel's "OpenVINO GenAI on NPU" guide
recommends), and a check that tells a CPU export apart.
"""

from __future__ import annotations

import re
from pathlib import Path

from ..errors import InvalidOption
from ..models import ModelSource, notice
from .openvino_export import (
    ExportRecipe, export_folder, export_openvino, is_complete_export, odd_widths, recorded_recipe,
)

DEFAULT_GROUP_SIZE = 128
FIX = "re-export with --weight-format int4 --sym --ratio 1.0 --group-size 128 (load('npu') does this for you)"


def npu_export_recipe(model: ModelSource, group_size: int = DEFAULT_GROUP_SIZE) -> ExportRecipe:
    """int4, symmetric, ratio 1.0, group-wise or channel-wise (-1); ``--group-size-fallback adjust`` if needed."""
    if isinstance(group_size, bool) or not isinstance(group_size, int) or not (group_size == -1 or group_size > 0):
        raise InvalidOption(
            f"group_size must be a positive whole number or -1 for channel-wise (got {group_size!r}); try 128."
        )
    fallback = "adjust" if odd_widths(model, group_size) else None
    variant = {DEFAULT_GROUP_SIZE: "npu", -1: "npu-cw"}.get(group_size, f"npu-g{group_size}")
    return ExportRecipe("int4", "int4", 4, True, group_size, 1.0, fallback, variant)


def npu_export_folder(model: ModelSource, group_size: int = DEFAULT_GROUP_SIZE) -> Path:
    return export_folder(model, "int4", npu_export_recipe(model, group_size).variant)


def npu_export_problem(folder: Path) -> str | None:
    """Why an OpenVINO export is not an NPU export, from its record, then its IR (None when it is, or cannot tell)."""
    name = Path(folder).name
    record = recorded_recipe(folder)
    if record is not None:
        q = record.get("quantization") or {}
        if q.get("bits") != 4:
            what = f"int{q['bits']}" if q.get("bits") else record.get("precision") or "float"
            return f"{name} holds {what} weights, but the NPU wants symmetric int4; {FIX}."
        if not q.get("sym", False):
            return f"{name} holds asymmetric int4 weights, but the NPU wants symmetric ones; {FIX}."
        ratio = q.get("ratio", 1.0)
        if ratio is not None and float(ratio) < 1.0:
            return (f"{name} keeps {100 - float(ratio) * 100:.0f}% of its layers in 8-bit (ratio {ratio}), "
                    f"an export made for the CPU; {FIX}.")
    xml = Path(folder) / "openvino_model.xml"
    types = set(re.findall(r'element_type="([a-z0-9]+)"', xml.read_text(errors="replace"))) if xml.is_file() else set()
    if "u4" in types:  # i4 = symmetric 4-bit, u4 = asymmetric
        return f"{name} holds asymmetric 4-bit weights (u4), but the NPU wants symmetric ones; {FIX}."
    if types and not types & {"i4", "nf4"}:
        return (f"{name} holds no 4-bit weights at all (its export did not compress them); delete {folder} "
                "and export again with --weight-format int4 --sym --ratio 1.0.")
    return None


def export_for_npu(model: ModelSource, group_size: int = DEFAULT_GROUP_SIZE, progress=notice) -> Path:
    """The NPU export of ``model``, cached; made again when made with other settings; a notice if not NPU-ready."""
    recipe = npu_export_recipe(model, group_size)
    folder = export_folder(model, recipe.precision, recipe.variant)
    complete = is_complete_export(folder)
    have = (recorded_recipe(folder) or {}).get("quantization") or {}
    same = all(have.get(k) == v for k, v in (recipe.quantization_config() or {}).items())
    if complete and not same:
        progress(f"{folder.name} was exported with other settings; re-exporting for the NPU.")
    if not complete or not same:
        folder = export_openvino(model, recipe.precision, recipe=recipe, force=complete, progress=progress)
    problem = npu_export_problem(folder)
    if problem:
        progress(problem)
    return folder
