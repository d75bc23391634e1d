"""One-off tuning experiments behind docs/tuning.md, measured through the backends themselves.

    python benchmarks/tuning.py                     # all experiments (a few minutes)
    python benchmarks/tuning.py --only kv,prefix    # some of them

Not part of the installed package: an experiment log, re-runnable. Each variant is a backend
loaded with other settings (``load("openvino", config={...})``, ``load("onnx", threads=N)``,
``load("npu", group_size=...)``); the variants of one experiment run interleaved (round-robin, a fresh
prompt per round, the same prompt for every variant of a round), so a busy neighbour slows all
variants alike. Numbers are medians with min-max in brackets.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

from phi3_helpers import load
from phi3_helpers.bench.worker import Prompts, Run, helper_run

EXPERIMENTS = ("cpu", "threads", "hint", "kv", "activations", "int4", "group", "prefix", "torch", "ort")


def _spread(values: list[float]) -> str:
    vals = [v for v in values if v is not None]
    return f"{statistics.median(vals):.1f} ({min(vals):.1f}-{max(vals):.1f})" if vals else "-"


def _table(name: str, runs: dict[str, list], note: str = "") -> dict:
    """Print and return one experiment's results: TTFT and ms/token per variant, and whether tokens agree."""
    first = {k: v[0].token_ids for k, v in runs.items() if v[0].token_ids}  # llama.cpp reports no tokens
    same = len({tuple(t) for t in first.values()}) == 1
    print(f"| {name} | TTFT ms | ms/token |\n|---|---|---|")
    for variant, rs in runs.items():
        print(f"| {variant} | {_spread([r.ttft_ms for r in rs])} | {_spread([r.ms_per_token for r in rs])} |")
    print(f"same greedy tokens in every variant: {same}. {note}\n", flush=True)
    return {
        "experiment": name, "same_tokens": same, "note": note,
        "variants": {k: [(r.ttft_ms, r.ms_per_token) for r in rs] for k, rs in runs.items()},
    }


def _round_robin(variants: dict, prompts: Prompts, length: str, rounds: int, n: int) -> dict[str, list]:
    out: dict[str, list] = {k: [] for k in variants}
    for _ in range(rounds):
        msgs = prompts.next(length)[0]
        for name, llm in variants.items():
            out[name].append(helper_run(llm, msgs, n))
    return out


def run(model: str | None, rounds: int, n: int, only: list[str]) -> list[dict]:
    base = load("openvino", model=model, precision="int4", device="CPU")
    prompts = Prompts(base, 1000, n)
    cores = os.cpu_count() or 1
    found: list[dict] = []

    def ov(precision: str = "int4", reuse_cache: bool = True, **config):
        return load("openvino", model=base.model, precision=precision, device="CPU", config=config,
                    reuse_cache=reuse_cache)

    def experiment(name: str, variants: dict, length: str = "short", note: str = "", rounds_: int = rounds) -> None:
        found.append(_table(name, _round_robin(variants, prompts, length, rounds_, n), note))
        for llm in variants.values():
            if llm is not base:
                llm.close()

    print(f"model {base.model.name}; {n} new tokens; {rounds} interleaved rounds; load average {os.getloadavg()}")
    if "cpu" in only:  # the course's CPU candidates against llama.cpp, interleaved (docs/tuning.md)
        cpu_paths(base, prompts, rounds, n, cores, ov)
    if "threads" in only:
        experiment(
            "OpenVINO GenAI int4 threads",
            {f"INFERENCE_NUM_THREADS={t}": ov(INFERENCE_NUM_THREADS=t) for t in sorted({1, cores})},
        )
    if "hint" in only:
        experiment(
            "performance hint", {"LATENCY": base, "THROUGHPUT": ov(PERFORMANCE_HINT="THROUGHPUT", NUM_STREAMS="AUTO")}
        )
    if "kv" in only:
        experiment(
            "KV-cache precision", {f"KV_CACHE_PRECISION={p}": ov(KV_CACHE_PRECISION=p) for p in ("u8", "f16", "f32")},
            "long", rounds_=max(2, rounds // 2),
        )
    if "activations" in only:
        experiment(
            "activation precision, fp16 weights",
            {
                "f32 (course setting)": ov("fp16"),
                "bf16 (CPU default here)": ov("fp16", INFERENCE_PRECISION_HINT="bf16"),
            },
        )
    if "int4" in only:
        npu = load("npu", model=base.model, device="CPU")
        experiment(
            "int4 recipe", {"int4 ratio 0.6 (CPU export)": base, "int4 ratio 1.0 (NPU export)": npu},
            note=f"sizes: {_mib(base.prepared_folder)} vs {_mib(npu.prepared_folder)} MiB",
        )
    if "group" in only:
        g128 = load("npu", model=base.model, device="CPU")
        gcw = load("npu", model=base.model, device="CPU", group_size=-1)
        experiment(
            "int4 group size (symmetric, ratio 1.0)", {"group 128": g128, "channel-wise (-1)": gcw},
            note=f"sizes: {_mib(g128.prepared_folder)} vs {_mib(gcw.prepared_folder)} MiB",
        )
    if "prefix" in only:
        fresh, repeat = [], []
        for _ in range(max(2, rounds // 2)):
            msgs = prompts.next("long")[0]
            fresh.append(helper_run(base, msgs, n))
            repeat.append(helper_run(base, msgs, n))
        found.append(
            _table(
                "prefix caching (long prompt)", {"fresh prompt": fresh, "same prompt again": repeat},
                "the second run finds the prompt's KV blocks in the prefix cache",
            )
        )
    if "torch" in only:
        import torch

        tl = load("transformers", model=base.model)
        default = torch.get_num_threads()
        runs: dict[str, list] = {}
        for t in sorted({1, default}):
            torch.set_num_threads(t)
            runs[f"{t} threads"] = _round_robin({"x": tl}, prompts, "short", rounds, n)["x"]
        torch.set_num_threads(default)
        found.append(_table("PyTorch fp32 threads (generate runs in the helper's worker thread)", runs))
        tl.close()
    if "ort" in only:
        from phi3_helpers.backends import available_backends

        why = available_backends()["onnx"]
        if why:
            print(f"ort: skipped ({why})")
        else:
            experiment(
                "ONNX Runtime GenAI int4 threads",
                {
                    f"intra_op_num_threads={t}": load(
                        "onnx", model=base.model, precision="int4", device="cpu", threads=t
                    )
                    for t in sorted({1, cores})
                },
            )
    return found


def cpu_paths(base, prompts: Prompts, rounds: int, n: int, threads: int, ov) -> None:
    """Each round: every candidate answers a short warm-up prompt and then the round's fresh prompt, then
    llama-bench runs for as many prompt tokens."""
    from phi3_helpers.bench.llama_cpp import built_or_reason, llama_row

    def onnx(**kw):
        return load("onnx", model=base.model, precision="int4", device="cpu", threads=threads, **kw)

    # no cache kept between answers: each prompt is prefilled whole, as llama-bench's pp (its KV cache starts empty);
    # the "cache kept" row keeps the course's default reuse, so the ~5 template tokens fresh prompts share are not
    # prefilled again
    variants = {
        "openvino int4, no cache kept": ov(reuse_cache=False),
        "openvino int4 SDPA": ov(ATTENTION_BACKEND="SDPA", reuse_cache=False),
        f"openvino int4 SDPA, {threads} threads, KV u8": ov(ATTENTION_BACKEND="SDPA", INFERENCE_NUM_THREADS=threads,
                                                           KV_CACHE_PRECISION="u8", reuse_cache=False),
        f"onnx int4, {threads} threads, no cache kept": onnx(reuse_cache=False),
        "onnx int4, cache kept (course default)": onnx(),
    }
    exe = built_or_reason()
    runs: dict[str, list] = {k: [] for k in variants}
    llama: list[tuple[float, float]] = []
    for i in range(rounds):
        msgs, ids = prompts.next("short")
        warm_up = prompts.next("short")[0]
        for name, llm in variants.items():
            helper_run(llm, warm_up, 4)  # as llama-bench warms up before it measures
            runs[name].append(helper_run(llm, msgs, n))
        row = llama_row(exe, len(ids), n, threads, 1)
        if row["status"] == "ok":
            short = row["prompts"]["short"]
            llama.append((short["ttft_ms"]["median"], short["ms_per_token"]["median"]))
        print(f"round {i + 1}: load average {os.getloadavg()}, llama.cpp {row.get('reason') or llama[-1]}", flush=True)
    if llama:
        runs["llama.cpp Q4_1 (llama-bench)"] = [Run(t, m, n, 0.0) for t, m in llama]
    _table("CPU paths, short prompt", runs, f"{n} tokens, {threads} threads, every prompt prefilled "
           "whole except in the 'cache kept' row; llama.cpp: pp TTFT, tg ms/token")
    for llm in variants.values():
        llm.close()


def _mib(folder) -> str:
    from phi3_helpers.models.cache import folder_size

    return f"{folder_size(folder) / 2**20:.0f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python benchmarks/tuning.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--only", default=",".join(EXPERIMENTS), help=f"comma-separated: {', '.join(EXPERIMENTS)}")
    args = ap.parse_args(argv)
    run(args.model, args.rounds, args.tokens, [x.strip() for x in args.only.split(",")])
    return 0


if __name__ == "__main__":
    sys.exit(main())
