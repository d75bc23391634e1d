"""Backend ``onnx``: Phi-3 on ONNX Runtime GenAI (DirectML or Windows ML on Windows, CUDA on NVIDIA, CPU anywhere).

The provider follows what is installed (``onnx_provider.py``, ``winml.py``); the folder is built or Microsoft's
prebuilt one fetched (``onnx_build.py``). Generation is og.Generator's pull loop in the reader's thread.
"""

from __future__ import annotations

import json
import os
import random
import threading
from pathlib import Path
from typing import Iterator

from ..errors import BackendUnavailable, DeviceUnavailable, InvalidOption, ModelFolderError, UnknownDevice
from ..errors import UnknownPrecision
from ..models import MODEL_ENV, PHI3_MINI, ModelSource, fetch_source, hub_reachable, notice, resolve_model
from ..models.catalog import hub_folder
from ..options import GenerationOptions
from . import winml
from .base import Backend, Plan, positive_int
from .onnx_build import PRECISIONS_BY_TARGET, PREBUILT_REPO, TARGET_NAMES, build_onnx_model, build_record
from .onnx_build import built_for, check_combination, check_onnx_folder, is_onnx_folder, onnx_folder
from .onnx_provider import _DEVICE_NAMES, GENAI_PACKAGES, INSTALL_HINTS, ProviderChoice, choose_provider
from .onnx_provider import device_report, installed_packages

_SEEDS = random.Random()  # the generators' seeds: random.seed() does not change them


def pick_target(target: str | None, choice: ProviderChoice) -> str:
    """The provider to build the folder for: ``target``, else the device asked, else the one chosen."""
    if target is not None:
        t = _DEVICE_NAMES.get(str(target).strip().lower())
        if t not in TARGET_NAMES:
            raise UnknownDevice(f"target {target!r} is not a provider to build for; use cpu, dml or cuda.")
        return t
    if choice.provider == "winml":
        return "cpu"  # Windows ML's EPs run folders built for the CPU
    return choice.asked if choice.asked in {"dml", "cuda"} else choice.provider  # what was asked, even if absent


def use_prebuilt(model, precision: str | None, target: str, prebuilt: bool | None) -> bool:
    """phi3-mini int4 for the CPU or DirectML: Microsoft's prebuilt folder (2.1-2.7 GB), not 7.6 GB and a build."""
    if prebuilt is False:
        return False
    if hub_folder("onnx", (precision or "int4").lower(), target) is None:
        if prebuilt:
            raise InvalidOption("prebuilt=True is only for phi3-mini at int4 for the CPU or DirectML; drop it to "
                                "build the model.")
        return False
    name = model.name if isinstance(model, ModelSource) else model if model is not None else os.environ.get(MODEL_ENV)
    if name is None:  # the default model: the real Phi-3 when the hub is reachable
        name = PHI3_MINI if hub_reachable()[0] else None
    if prebuilt and name != PHI3_MINI:
        raise InvalidOption(f"prebuilt=True is only for {PHI3_MINI} (int4, CPU or DirectML), not {name!r}; drop it "
                            "to build the model.")
    return name == PHI3_MINI


class OnnxGenAIBackend(Backend):
    """Phi-3 through ONNX Runtime GenAI; ``model`` may be a ready GenAI folder.

    Options: ``target`` (the provider to build for), ``fallback_to_cpu``, ``prebuilt`` (phi3-mini int4: Microsoft's
    folder; default yes), ``threads`` (CPU threads; default one per core), ``rebuild``, ``source`` (hub or export).
    """

    name = "onnx"
    runtime = "ONNX Runtime GenAI"
    requires = ("transformers", "onnxruntime_genai")
    precisions = ("int4", "fp16", "fp32")
    options = {"target": None, "fallback_to_cpu": True, "prebuilt": None, "threads": None, "rebuild": False,
               "source": None}
    KV_MIN_TOKENS = 1024  # tokens a chat's first KV buffer holds, at least

    @classmethod
    def devices_here(cls) -> list[str | None]:
        return [choose_provider(None, installed_packages()).provider.upper()]

    @classmethod
    def precisions_on(cls, device: str | None) -> tuple[str, ...]:
        key = (device or "cpu").lower()
        return PRECISIONS_BY_TARGET.get("cpu" if key.startswith("winml") else key, cls.precisions)

    @classmethod
    def device_report(cls) -> list[dict]:
        return device_report()

    @classmethod
    def plan(cls, model=None, device: str | None = None, precision: str | None = None, **options) -> Plan:
        s = cls.check_options(options)
        positive_int("threads", s["threads"])
        if s["source"] is not None and s["prebuilt"] is None:  # phi3-mini: "hub" = prebuilt, "export" = build
            s["prebuilt"] = {"hub": True, "export": False}.get(s["source"])
        s["choice"] = choice = choose_provider(device, installed_packages(), bool(s["fallback_to_cpu"]))
        s["target"] = target = pick_target(s["target"], choice)
        path = None if isinstance(model, ModelSource) or model is None else Path(model).expanduser()
        folder = None
        if path is not None and is_onnx_folder(path):  # a ready GenAI folder
            folder = path.resolve()
            source = ModelSource(folder.name, folder)
            prebuilt_here = PREBUILT_REPO.split("/")[1] in str(folder)
            built = str(build_record(folder).get("precision") or ("int4" if prebuilt_here else ""))
            if precision and built and precision.lower() != built.lower():
                raise UnknownPrecision(f"{folder} holds a {built} model; drop precision= or build a {precision} "
                                       "folder.")
            precision = (precision or built or "as built").lower()
            s["built_for"] = built_for(check_onnx_folder(folder))
        elif use_prebuilt(model, precision, target, s["prebuilt"]):
            precision, s["prebuilt"], s["built_for"] = "int4", True, target
            s["hub"] = hub_folder("onnx", precision, target)
            source = ModelSource(PHI3_MINI, Path(s["hub"].repo_id) / s["hub"].subfolder, s["hub"].repo_id)
        else:
            precision = super().check_precision(precision)
            check_combination(precision, target)
            source = model if isinstance(model, ModelSource) else resolve_model(model)
            folder, s["built_for"] = onnx_folder(source, precision, target), target
        s["prebuilt"] = bool(s["prebuilt"]) and folder is None
        notices = [choice.notice]
        runs_on = choice.provider.upper()
        if choice.provider == "winml":
            s["winml"] = plan = cls.plan_winml(device, s, folder or source.folder)
            notices, runs_on = [f"ONNX Runtime GenAI runs on {plan.label}: {plan.reason}"], plan.device
        elif s["built_for"] != choice.provider:
            notices[0] = notices[0].rstrip(".") + "; " + cls.reconcile(s, folder or source.folder)
        return Plan(cls.name, source, runs_on, precision, folder, tuple(notices), s)

    @staticmethod
    def plan_winml(device: str | None, settings: dict, folder: Path) -> winml.WinMLPlan:
        """The Windows ML EP that runs; a failing catalog gives its CPU EP (or the error without fallback_to_cpu)."""
        if settings["built_for"] != "cpu":
            raise ModelFolderError(
                f"{folder} was built for {TARGET_NAMES.get(settings['built_for'], settings['built_for'])}; Windows ML "
                "runs folders built for the CPU: python -m phi3_helpers prepare --backend onnx --device cpu."
            )
        asked = settings["choice"].asked  # None (auto), gpu or winml (then the device names gpu, npu or cpu)
        want = winml.wanted(device) if asked == "winml" else "gpu" if asked == "gpu" else None
        fallback = bool(settings["fallback_to_cpu"])
        try:
            eps = [e.name for e in winml.read_catalog()]
        except DeviceUnavailable as exc:
            if not fallback:
                raise
            return winml.WinMLPlan(None, "CPU", f"{str(exc).rstrip('.')}; the CPU runs instead.", fell_back=True)
        return winml.choose_winml(installed_packages(), *winml.this_system(), eps, want, fallback)

    @staticmethod
    def reconcile(settings: dict, folder: Path) -> str:
        """A folder built for another provider: run it on the CPU (said in the notice), or say how to fix it."""
        built, runs = settings["built_for"], settings["choice"].provider
        if runs == "cpu" and built in GENAI_PACKAGES:
            if not settings["fallback_to_cpu"]:
                raise DeviceUnavailable(
                    f"{folder} was built for {TARGET_NAMES[built]}, which is not installed here; build it for the CPU "
                    f"(target='cpu'), install {GENAI_PACKAGES[built]}, or allow fallback_to_cpu=True."
                )
            settings["clear_providers"] = True  # the graph runs on the CPU provider too
            return f"the model folder was built for {TARGET_NAMES[built]} and runs on the CPU here."
        raise ModelFolderError(
            f"{folder} was built for {TARGET_NAMES.get(built, built)}, but ONNX Runtime GenAI runs on "
            f"{TARGET_NAMES[runs]} here; build it for {TARGET_NAMES[runs]} (python -m phi3_helpers prepare "
            f"--backend onnx --device {runs}) or use device='cpu'."
        )

    @classmethod
    def prepared_path(cls, plan: Plan) -> Path | None:
        return plan.folder

    @classmethod
    def prepare(cls, plan: Plan) -> Plan:
        s = plan.settings
        if s["prebuilt"]:
            model = fetch_source(s["hub"])
            check_onnx_folder(model.folder)
            return plan.replace(model=model, folder=model.folder)
        if plan.folder is not None and plan.folder == plan.model.folder:  # a ready folder
            return plan
        return plan.replace(folder=build_onnx_model(plan.model, plan.precision, s["target"], rebuild=s["rebuild"]))

    # -- load --
    def _load(self) -> None:
        try:
            import onnxruntime_genai as og
        except ImportError as exc:
            raise BackendUnavailable(f"onnxruntime_genai does not import ({exc}); {INSTALL_HINTS['cpu']}.") from None
        self.genai_config = check_onnx_folder(self.prepared_folder)
        config = og.Config(str(self.prepared_folder))
        if self.plan.settings.get("clear_providers"):
            config.clear_providers()
        self.winml_plan: winml.WinMLPlan | None = self.plan.settings.get("winml")  # the planned one, or its CPU EP
        if self.winml_plan is not None:
            self._start_winml(config)
        if self.device == "CPU":
            self._cpu_threads(config)
        try:
            self.og_model = og.Model(config)
        except Exception as exc:
            if not (self.winml_plan and self.winml_plan.ep and self.plan.settings["fallback_to_cpu"]):
                raise self._explain(exc, self.prepared_folder) from None
            self._winml_fallback(config, f"{self.winml_plan.ep} did not start ({winml.first_line(exc).rstrip('. ')})")
            self._cpu_threads(config)
            self.og_model = og.Model(config)
        self.kv.decoded_reusable = self.precision == "fp32"  # see PrefixCache
        eos = self.genai_config.get("model", {}).get("eos_token_id")
        extra = eos if isinstance(eos, list) else [eos] if isinstance(eos, int) else []
        self.eos_token_ids = frozenset(self.eos_token_ids | {int(i) for i in extra})

    def _cpu_threads(self, config) -> None:
        # ORT GenAI uses one CPU thread unless told; 0 is one per physical core. Set at load: a folder stays portable
        n = self.plan.settings["threads"] or 0
        config.overlay(json.dumps({"model": {"decoder": {"session_options": {"intra_op_num_threads": n}}}}))

    def _start_winml(self, config) -> None:
        """Register the planned Windows ML EP and point ``config`` at it; its CPU EP when it does not register."""
        if self.winml_plan.ep:
            try:
                winml.register(self.winml_plan.ep)
            except DeviceUnavailable as exc:
                if not self.plan.settings["fallback_to_cpu"]:
                    raise
                return self._winml_fallback(config, str(exc).rstrip("."))
        winml.configure(config, self.winml_plan)

    def _winml_fallback(self, config, why: str) -> None:
        self.winml_plan = winml.WinMLPlan(None, "CPU", why, fell_back=True)
        winml.configure(config, self.winml_plan)
        self.device = "CPU"
        notice(f"ONNX Runtime GenAI runs on Windows ML's CPU EP: {why}; the CPU runs instead.")

    @staticmethod
    def _explain(exc: Exception, folder: Path) -> Exception:
        msg = winml.first_line(exc)
        if "provider" in msg.lower() or "interface not available" in msg.lower():
            return DeviceUnavailable(
                f"ONNX Runtime GenAI could not start the model's execution provider ({msg}); check `python -m "
                "phi3_helpers devices` and that only one ONNX Runtime GenAI package is installed, or use device='cpu'."
            )
        return ModelFolderError(f"ONNX Runtime GenAI could not load {folder} ({msg}); delete the folder and build it "
                                "again.")

    @property
    def context_length(self) -> int:
        config = self.genai_config
        n = config.get("model", {}).get("context_length") or config.get("search", {}).get("max_length")
        return int(n) if n else self.model.context_length

    def describe(self) -> str:
        built = TARGET_NAMES.get(self.plan.settings["built_for"], self.plan.settings["built_for"])
        via = f" via {self.winml_plan.label}" if self.winml_plan else ""
        return f"{self.name} | {self.device}{via} | {self.precision} (built for {built}) | {self.model.name}"

    # -- generate --
    def stream_tokens(self, input_ids: list[int], options: GenerationOptions, stop: threading.Event
                      ) -> Iterator[list[int]]:
        # One og.Generator is kept between answers (as onnxruntime-genai's model-chat.py): a new prompt rewinds it to
        # the part it shares with what the generator holds and appends the rest.
        generator, keep = self._generator(options, input_ids)
        held = list(input_ids[:keep])  # the tokens whose keys and values the generator has computed
        prefilled: list[int] = []  # held, when all of it was computed in prefills
        try:
            if stop.is_set():
                return
            if keep < generator.token_count():
                generator.rewind_to(keep)
            generator.append_tokens(list(input_ids[keep:]))
            held = list(input_ids)
            pending: list[int] = []
            produced = 0
            while not generator.is_done() and not stop.is_set():
                generator.generate_next_token()
                held += pending  # a token enters the KV cache only when the next step feeds it
                pending = [int(t) for t in generator.get_next_tokens()]
                produced += len(pending)
                yield pending
                if produced >= options.max_new_tokens or any(i in self.eos_token_ids for i in pending):
                    break
            answer = held[len(input_ids):] + pending
            if self.kv.enabled and not self.kv.decoded_reusable and len(answer) > 1 and not stop.is_set():
                # the answer's keys and values from a prefill, as without reuse, now that the reader has its last
                # token (after a Stop the next turn does it, so that Stop ends the answer at once)
                try:
                    generator.rewind_to(len(input_ids))
                    generator.append_tokens(answer)
                    held = prefilled = list(input_ids) + answer
                except Exception:  # the answer is complete; only the cache is lost
                    self.kv.reset()
        except GeneratorExit:  # the reader stopped (Stop): what the generator holds is still right
            raise
        except BaseException:
            self.kv.reset()  # the generator's state is unknown after an error
            raise
        finally:
            if self.kv.enabled and self.kv.runtime is not None:
                self.kv.hold(held, prefilled=len(prefilled) if prefilled else min(len(held), len(input_ids)))
            else:
                self.kv.reset()  # reuse off: frees the KV cache now
            del generator

    def _generator(self, options: GenerationOptions, input_ids: list[int]):
        """The kept og.Generator and how many of its tokens the prompt keeps, or a fresh one and 0."""
        import onnxruntime_genai as og

        search: dict = {"do_sample": options.sampling}
        if options.sampling:
            search.update(temperature=options.temperature, top_p=options.top_p)
        search["max_length"] = need = min(len(input_ids) + options.max_new_tokens, self.context_length)
        if self.kv.enabled:  # one generator for several turns; max_new_tokens is counted here
            kept = self.kv.runtime
            room = kept[0]["max_length"] if kept is not None else 0
            if room >= need and kept[0] == dict(search, max_length=room):
                return kept[1], self.kv.plan(input_ids)
            self.kv.reset()
            del kept  # the old buffer is freed first
            # allocated whole (Phi-3, CPU: 0.8 MB a token): at least doubled when outgrown, at one full prefill
            search["max_length"] = min(max(2 * need, self.KV_MIN_TOKENS), self.context_length)
        params = og.GeneratorParams(self.og_model)
        # seeded here, or ORT GenAI reads std::random_device 624 times (docs/tuning.md)
        params.set_search_options(**search, random_seed=_SEEDS.getrandbits(31))
        generator = og.Generator(self.og_model, params)
        if self.kv.enabled:
            self.kv.runtime = (search, generator)
        self.kv.last_reused, self.kv.last_prefilled = 0, len(input_ids)
        return generator, 0

    def close(self) -> None:
        self.kv.reset()
        self.og_model = None
