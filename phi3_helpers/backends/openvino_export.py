"""The OpenVINO export: ``optimum-cli export openvino``'s own parser and command run in this process (so the
"Same as: optimum-cli ..." line is true by construction), cached atomically in
``$PHI3_CACHE_DIR/openvino/<model>-<precision>[-variant]`` with a record of the recipe and file sizes, written last.
"""

from __future__ import annotations

import argparse
import json
import shlex
from dataclasses import dataclass
from pathlib import Path

from ..console import quiet
from ..errors import InvalidOption, ModelFolderError
from ..models import ModelSource, cache, notice
from . import installed_version

#: What a runtime needs from an export folder; the record is written last, by our export.
EXPORT_FILES = ("openvino_model.xml", "openvino_model.bin", "config.json")
RECORD = "phi3_helpers_export.json"
RECORDED_VERSIONS = ("optimum-intel", "openvino", "nncf", "transformers")


@dataclass(frozen=True)
class ExportRecipe:
    """How one precision is exported; ``variant`` is "" for the general export, "npu" for the NPU's."""

    precision: str
    weight_format: str
    bits: int | None = None
    sym: bool = False
    group_size: int | None = None
    ratio: float | None = None
    group_size_fallback: str | None = None
    variant: str = ""

    def quantization_config(self) -> dict | None:
        if self.bits is None:
            return None
        q = {"bits": self.bits, "sym": self.sym, "group_size": self.group_size, "ratio": self.ratio,
             "group_size_fallback": self.group_size_fallback}
        return {k: v for k, v in q.items() if v is not None}

    def cli_flags(self) -> list[str]:
        flags = ["--weight-format", self.weight_format]
        if self.bits == 4:
            flags += ["--sym"] if self.sym else []
            named = {"--group-size": self.group_size, "--ratio": self.ratio,
                     "--group-size-fallback": self.group_size_fallback}
            flags += [part for flag, value in named.items() if value is not None for part in (flag, str(value))]
        return flags


def odd_widths(model: ModelSource, group_size: int) -> list[int]:
    """Layer input widths that are not a multiple of ``group_size`` (576 in the offline model)."""
    if group_size <= 0:  # channel-wise: no groups
        return []
    widths = {int(model.config["hidden_size"]), int(model.config["intermediate_size"])}
    return sorted(w for w in widths if w % group_size)


def export_recipe(model: ModelSource, precision: str, variant: str = "") -> ExportRecipe:
    """The classic settings (int4: symmetric, group 128, ratio 0.6; NNCF adjusts the group of odd-width layers)."""
    if precision == "int4":
        fallback = "adjust" if odd_widths(model, 128) else None
        return ExportRecipe("int4", "int4", 4, True, 128, 0.6, fallback, variant)
    if precision in ("int8", "fp16"):
        return ExportRecipe(precision, precision, 8 if precision == "int8" else None, variant=variant)
    raise InvalidOption(f"no OpenVINO export recipe for precision {precision!r}; use int4, int8 or fp16.")


def export_folder(model: ModelSource, precision: str, variant: str = "") -> Path:
    return cache.cache_root() / "openvino" / f"{model.name}-{precision}{'-' + variant if variant else ''}"


def cli_args(source: str, recipe: ExportRecipe, out: Path | str) -> list[str]:
    return ["--model", source, "--task", "text-generation-with-past", *recipe.cli_flags(), str(out)]


def export_command(model: ModelSource, recipe: ExportRecipe, out: Path | str) -> str:
    """The optimum-cli command of this export, as shown to learners (the hub id when there is one)."""
    return shlex.join(["optimum-cli", "export", "openvino", *cli_args(str(model.repo_id or model.folder), recipe, out)])


def recorded_recipe(folder: Path) -> dict | None:
    """The record our export wrote ({precision, quantization, command, versions, sizes}), or None."""
    try:
        return json.loads((Path(folder) / RECORD).read_text())
    except (OSError, ValueError):
        return None


def is_complete_export(folder: Path) -> bool:
    """Every file the runtime needs is there, with the size our export recorded (a truncated file is damage)."""
    record = recorded_recipe(folder)
    if record is None or not all((Path(folder) / f).is_file() for f in EXPORT_FILES):
        return False
    return not cache.damaged_files(folder, record.get("sizes"))


def export_openvino(
    model: ModelSource, precision: str = "int4", recipe: ExportRecipe | None = None, force: bool = False,
    progress=notice,
) -> Path:
    """Export ``model`` to OpenVINO IR at ``precision`` (cached; atomic, so Ctrl-C safe); returns the folder."""
    recipe = recipe or export_recipe(model, precision)
    out = export_folder(model, recipe.precision, recipe.variant)
    if is_complete_export(out) and not force:
        return out
    damaged = cache.damaged_files(out, (recorded_recipe(out) or {}).get("sizes"))
    if damaged:
        progress(f"The cached export {out} is damaged ({damaged[0]} is missing or truncated); exporting it again.")
    command = export_command(model, recipe, out)
    progress(f"Exporting {model.name} to OpenVINO {recipe.precision} (once; cached in {out}) ...")
    progress("Same as: " + command)
    odd = odd_widths(model, recipe.group_size or 0) if recipe.group_size_fallback else []
    if odd:
        progress(f"Layer width {odd[0]} is not a multiple of the int4 group size {recipe.group_size}: "
                 "NNCF adjusts the group size for those layers (--group-size-fallback adjust).")
    with quiet(), cache.atomic_folder(out) as tmp:  # TracerWarnings and NNCF tables held back; shown on failure
        from optimum.commands.export.openvino import OVExportCommand, parse_args_openvino

        parser = argparse.ArgumentParser(prog="optimum-cli export openvino")
        parse_args_openvino(parser)
        args = parser.parse_args(cli_args(str(model.folder), recipe, tmp))
        OVExportCommand(None, args, from_defaults_factory=True, parser=parser).run()
        record = {
            "model": model.name, "precision": recipe.precision, "variant": recipe.variant,
            "quantization": recipe.quantization_config(), "command": command,
            "versions": {dist: installed_version(dist) for dist in RECORDED_VERSIONS}, "sizes": cache.file_sizes(tmp),
        }
        (tmp / RECORD).write_text(json.dumps(record, indent=2))
    return out


def check_export_folder(folder: Path) -> None:
    missing = [f for f in EXPORT_FILES if not (Path(folder) / f).is_file()]
    if missing:
        raise ModelFolderError(f"OpenVINO folder {folder} is missing {missing[0]}; delete it and export again "
                               "(python -m phi3_helpers prepare --backend openvino).")
