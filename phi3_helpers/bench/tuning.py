"""Measure the runtime settings that docs/tuning.md talks about, on this machine.

    python -m phi3_helpers.bench.tuning [--model M] [--rounds 5] [--tokens 32] [--only threads,kv]

Each experiment loads the variants side by side and runs them interleaved (round-robin, a fresh
prompt per round, the same prompt for every variant in a round), so a busy neighbour slows all
variants alike; it prints the median TTFT and ms/token of each variant, with min-max.

Experiments (OpenVINO GenAI on the CPU unless said otherwise):
  threads    INFERENCE_NUM_THREADS 1 vs all cores
  hint       PERFORMANCE_HINT LATENCY vs THROUGHPUT
  kv         KV_CACHE_PRECISION u8 (the CPU default) vs f16 vs f32
  activations INFERENCE_PRECISION_HINT f32 (the course's setting) vs bf16 (the default on CPUs
             with AVX512-BF16/AMX): speed, and whether the greedy answer stays the same
  int4       the int4 export for CPU (ratio 0.6: 40% of layers int8) vs the NPU export (ratio 1.0)
  group      int4 (symmetric, ratio 1.0) with group size 128 vs channel-wise (-1); builds the
             channel-wise export once if it is missing (about a minute)
  prefix     prefix caching: the same long prompt twice (second TTFT) vs a fresh one
  torch      PyTorch called from the main thread vs a worker thread, and 1 vs 2 threads
  ort        ONNX Runtime GenAI int4 with intra_op_num_threads 1 vs all cores
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path

from .raw import TokenClock
from .worker import Prompts

EXPERIMENTS = ("threads", "hint", "kv", "activations", "int4", "group", "prefix", "torch", "ort")


def _genai(folder: Path, device: str = "CPU", **overrides):
    import openvino_genai as ov_genai

    from ..backends.openvino import runtime_config

    cfg = runtime_config(device, folder)
    cfg.update(overrides)
    return ov_genai.LLMPipeline(str(folder), device, **cfg)


def _genai_run(pipe, ids: list[int], n: int, eos) -> tuple[float, float, list[int]]:
    import numpy as np
    import openvino as ov
    import openvino_genai as ov_genai

    cfg = pipe.get_generation_config()
    cfg.max_new_tokens, cfg.do_sample, cfg.stop_token_ids = n, False, set(eos)
    a = np.asarray([ids], dtype=np.int64)
    clock = TokenClock()

    class Clock(ov_genai.StreamerBase):
        def write(self, token):
            clock.tick(token if isinstance(token, list) else [token])
            return ov_genai.StreamingStatus.RUNNING

        def end(self):
            pass

    clock.t0 = time.perf_counter()
    pipe.generate(ov_genai.TokenizedInputs(ov.Tensor(a), ov.Tensor(np.ones_like(a))), cfg, Clock())
    r = clock.run()
    return r.ttft_ms, r.ms_per_token or float("nan"), r.token_ids


def _in_thread(fn):
    out: list = []
    t = threading.Thread(target=lambda: out.append(fn()))
    t.start()
    t.join()
    return out[0]


def _table(name: str, results: dict[str, list[tuple[float, float, list[int]]]], note: str = "") -> dict:
    rows = {}
    ref_tokens = None
    for variant, runs in results.items():
        ttft = [r[0] for r in runs]
        ms = [r[1] for r in runs]
        same = None
        if ref_tokens is None:
            ref_tokens = [r[2] for r in runs]
        else:
            same = all(a == b for a, b in zip(ref_tokens, [r[2] for r in runs]))
        rows[variant] = {
            "ttft_ms": statistics.median(ttft), "ttft_min": min(ttft), "ttft_max": max(ttft),
            "ms_per_token": statistics.median(ms), "ms_min": min(ms), "ms_max": max(ms), "same_tokens_as_first": same,
        }
        print(
            f"  {variant:<28} TTFT {rows[variant]['ttft_ms']:7.0f} ms ({min(ttft):.0f}-{max(ttft):.0f})   "
            f"{rows[variant]['ms_per_token']:6.1f} ms/token ({min(ms):.1f}-{max(ms):.1f})"
            + ("" if same is None else f"   same tokens as the first: {'yes' if same else 'NO'}"),
            flush=True,
        )
    if note:
        print(f"  ({note})")
    return {"experiment": name, "variants": rows, "note": note}


def _round_robin(variants: dict, prompts: Prompts, length: str, rounds: int, n: int, eos) -> dict:
    out = {k: [] for k in variants}
    for k, fn in variants.items():  # warm-up
        fn(prompts.next(length)[1], n)
    for i in range(rounds):
        ids = prompts.next(length)[1]
        names = list(variants)
        names = names[i % len(names):] + names[: i % len(names)]
        for k in names:
            out[k].append(variants[k](ids, n))
    return out


def run(model: str | None, rounds: int, n: int, only: list[str]) -> list[dict]:
    from .. import load
    from ..backends.openvino import export_folder

    llm = load("openvino", model=model, precision="int4", device="CPU")  # tokenizer, prompts, exports
    prompts = Prompts(llm, 1000, n)
    eos = llm.eos_token_ids
    int4 = export_folder(llm.model, "int4")
    cores = os.cpu_count() or 1
    found: list[dict] = []

    def genai_variants(**variants):
        pipes = {k: _genai(folder, **cfg) for k, (folder, cfg) in variants.items()}
        return {k: (lambda p: (lambda ids, m: _in_thread(lambda: _genai_run(p, ids, m, eos))))(p) for k, p in pipes.items()}

    print(f"model {llm.model.name}; {n} new tokens; {rounds} interleaved rounds; load average {os.getloadavg()}", flush=True)
    if "threads" in only:
        print("threads (OpenVINO GenAI int4, CPU, short prompt):")
        v = genai_variants(**{"INFERENCE_NUM_THREADS=1": (int4, {"INFERENCE_NUM_THREADS": 1}), f"INFERENCE_NUM_THREADS={cores}": (int4, {"INFERENCE_NUM_THREADS": cores})})
        found.append(_table("threads", _round_robin(v, prompts, "short", rounds, n, eos)))
    if "hint" in only:
        print("performance hint (OpenVINO GenAI int4, CPU, short prompt):")
        v = genai_variants(LATENCY=(int4, {}), THROUGHPUT=(int4, {"PERFORMANCE_HINT": "THROUGHPUT", "NUM_STREAMS": "AUTO"}))
        found.append(_table("hint", _round_robin(v, prompts, "short", rounds, n, eos)))
    if "kv" in only:
        print("KV-cache precision (OpenVINO GenAI int4, CPU, long prompt):")
        v = genai_variants(**{f"KV_CACHE_PRECISION={p}": (int4, {"KV_CACHE_PRECISION": p}) for p in ("u8", "f16", "f32")})
        found.append(_table("kv", _round_robin(v, prompts, "long", max(2, rounds // 2), n, eos)))
    if "activations" in only:
        print("activation precision (OpenVINO GenAI fp16 weights, CPU, short prompt):")
        fp16 = export_folder(llm.model, "fp16")
        v = genai_variants(**{"f32 (course setting)": (fp16, {}), "bf16 (CPU default here)": (fp16, {"INFERENCE_PRECISION_HINT": "bf16"})})
        found.append(_table("activations", _round_robin(v, prompts, "short", rounds, n, eos)))
    if "int4" in only:
        from ..backends.npu import npu_export_recipe
        from ..backends.openvino import is_complete_export

        recipe = npu_export_recipe(llm.model)
        npu_folder = export_folder(llm.model, recipe.precision, recipe.variant)
        if is_complete_export(npu_folder):
            print("int4 recipe (CPU, short prompt): sizes", {k: f"{sum(f.stat().st_size for f in p.glob('*.bin')) / 2**20:.0f} MiB" for k, p in {"ratio 0.6": int4, "ratio 1.0": npu_folder}.items()})
            v = genai_variants(**{"int4 ratio 0.6 (CPU export)": (int4, {}), "int4 ratio 1.0 (NPU export)": (npu_folder, {})})
            found.append(_table("int4", _round_robin(v, prompts, "short", rounds, n, eos)))
        else:
            print("int4 recipe: skipped (no NPU export cached; run python -m phi3_helpers prepare --backend npu)")
    if "group" in only:
        from ..backends.npu import export_for_npu

        g128, gcw = export_for_npu(llm.model, 128), export_for_npu(llm.model, -1)
        sizes = {k: f"{sum(f.stat().st_size for f in p.glob('*.bin')) / 2**20:.0f} MiB" for k, p in {"group 128": g128, "channel-wise": gcw}.items()}
        print("int4 group size (symmetric, ratio 1.0, CPU, short prompt): sizes", sizes)
        v = genai_variants(**{"group 128": (g128, {}), "channel-wise (-1)": (gcw, {})})
        found.append(_table("group", _round_robin(v, prompts, "short", rounds, n, eos), f"weights: {sizes}"))
    if "prefix" in only:
        print("prefix caching (OpenVINO GenAI int4, CPU, long prompt, TTFT):")
        pipe = _genai(int4)
        fresh, repeat = [], []
        for _ in range(max(2, rounds // 2)):
            ids = prompts.next("long")[1]
            fresh.append(_in_thread(lambda: _genai_run(pipe, ids, n, eos)))
            repeat.append(_in_thread(lambda: _genai_run(pipe, ids, n, eos)))
        found.append(_table("prefix", {"fresh prompt": fresh, "same prompt again": repeat}, "the second run finds the prompt's KV blocks in the prefix cache"))
    if "torch" in only:
        print("PyTorch (transformers fp32, short prompt):")
        import torch

        from .raw import TransformersRaw

        tl = load("transformers", model=llm.model)
        raw = TransformersRaw(tl)
        raw.in_thread = False
        default = torch.get_num_threads()

        def torch_variant(where: str, threads: int):
            def fn(ids, m):
                def go():
                    torch.set_num_threads(threads)
                    try:
                        r = raw.run(ids, m)
                    finally:
                        torch.set_num_threads(default)
                    return r.ttft_ms, r.ms_per_token or float("nan"), r.token_ids

                return go() if where == "main" else _in_thread(go)

            return fn

        v = {f"{w} thread, {t} threads": torch_variant(w, t) for w in ("main", "worker") for t in sorted({1, default})}
        found.append(_table("torch", _round_robin(v, prompts, "short", rounds, n, eos)))
        raw.close()
        tl.close()
    if "ort" in only:
        from ..backends import available_backends

        why = available_backends().get("onnx", "not registered")
        if why:
            print(f"ort: skipped ({why})")
        else:
            import onnxruntime_genai as og

            ol = load("onnx", model=llm.model, precision="int4", device="cpu")
            print("ONNX Runtime GenAI int4 (CPU, short prompt):")

            def ort_variant(threads: int):
                config = og.Config(str(ol.prepared_folder))
                config.overlay(json.dumps({"model": {"decoder": {"session_options": {"intra_op_num_threads": threads}}}}))
                model = og.Model(config)

                def fn(ids, m):
                    clock = TokenClock()
                    params = og.GeneratorParams(model)
                    params.set_search_options(max_length=len(ids) + m, do_sample=False)
                    gen = og.Generator(model, params)
                    gen.append_tokens(list(ids))
                    while not gen.is_done() and len(clock.ids) < m:
                        gen.generate_next_token()
                        new = [int(t) for t in gen.get_next_tokens()]
                        clock.tick(new)
                        if set(new) & set(eos):
                            break
                    r = clock.run()
                    return r.ttft_ms, r.ms_per_token or float("nan"), r.token_ids

                return lambda ids, m: _in_thread(lambda: fn(ids, m))

            v = {f"intra_op_num_threads={t}": ort_variant(t) for t in sorted({1, cores})}
            found.append(_table("ort", _round_robin(v, prompts, "short", rounds, n, eos)))
    return found


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m phi3_helpers.bench.tuning", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--tokens", type=int, default=32)
    p.add_argument("--only", default=",".join(EXPERIMENTS), help=f"comma-separated: {', '.join(EXPERIMENTS)}")
    p.add_argument("--json", default=None, help="also write the results to this file")
    args = p.parse_args(argv)
    only = [x.strip() for x in args.only.split(",") if x.strip()]
    bad = [x for x in only if x not in EXPERIMENTS]
    if bad or args.rounds < 1 or args.tokens < 2:
        print(f"error: use --only with {', '.join(EXPERIMENTS)}, --rounds >= 1 and --tokens >= 2.", file=sys.stderr)
        return 2
    found = run(args.model, args.rounds, args.tokens, only)
    if args.json:
        Path(args.json).write_text(json.dumps({"load_avg": os.getloadavg(), "results": found}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
