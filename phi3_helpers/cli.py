"""Command line: ``python -m phi3_helpers {ask,chat,devices,prepare,bench,demo,doctor} ...``, one parser.

Each subcommand is an ``add_*`` function (its arguments) and a ``cmd_*`` function (args -> exit code).
Every error is a Phi3Error: one line that names the fix, exit 2; Ctrl-C exits 130.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path
from typing import Callable, Sequence

from . import DEFAULT_BACKEND, doctor
from .backends import BACKENDS, backend_class, resolve_name
from .demo import DEMO_PROMPT, keep_busy
from .devices import format_report, report
from .errors import EmptyPrompt, InvalidOption, Phi3Error
from .options import GenerationOptions

EXIT_BAD_INPUT = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, not usage + message
        self.exit(EXIT_BAD_INPUT, f"error: {message} (see: python -m phi3_helpers {self.prog.split()[-1]} --help)\n")


def _common(p: argparse.ArgumentParser, generation: bool = True, backend: str = DEFAULT_BACKEND) -> None:
    p.add_argument("--backend", default=backend, help=f"one of {', '.join(BACKENDS)} (default: {backend}); "
                   "PHI3_NPU_PATH=classic makes npu mean npu-classic")
    p.add_argument("--precision", help="int4, int8, fp16 (openvino, onnx, npu-classic), fp32 (transformers, onnx); "
                   "default: the backend's first")
    p.add_argument("--device", help="CPU, GPU, NPU or AUTO (default: CPU; npu: the NPU if present, else CPU; onnx: "
                   "auto, dml, cuda, cpu, winml, winml-npu; see `devices`)")
    p.add_argument("--model", help="phi3-mini, smollm2-135m-phi3 or a folder (default: $PHI3_MODEL, else phi3-mini "
                   "online, else offline)")
    if generation:
        p.add_argument("--max-new-tokens", type=_positive_int, default=256)
        p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default), about 0.7 for variety")
        p.add_argument("--top-p", type=float, default=1.0)
        p.add_argument("--system", help="system prompt")


def _options(args) -> dict:
    """The generation options, checked before the (slow) load."""
    opts = {"max_new_tokens": args.max_new_tokens, "temperature": args.temperature, "top_p": args.top_p}
    GenerationOptions.make(None, **opts)
    return opts


def _load(args, plan_only: bool = False):
    """Load (or only plan) the backend, model, device, precision (and source) the command line asks for."""
    import phi3_helpers  # looked up now: the tests replace load()

    extra = {"source": args.source} if getattr(args, "source", None) else {}
    run = phi3_helpers.plan_load if plan_only else phi3_helpers.load
    return run(args.backend, model=args.model, device=args.device, precision=args.precision, **extra)


def _print_stream(resp) -> None:
    """Write the answer as it streams; Ctrl-C stops it inside the runtime (finish reason ``stopped``)."""
    try:
        for piece in resp:
            sys.stdout.write(piece)
            sys.stdout.flush()
    except KeyboardInterrupt:
        resp.stop()
    sys.stdout.write("\n")


def add_ask(p) -> None:
    p.add_argument("question")
    _common(p)


def cmd_ask(args) -> int:
    if not args.question.strip():
        raise EmptyPrompt('the question is empty; try: python -m phi3_helpers ask "What is the capital of France?"')
    opts = _options(args)
    llm = _load(args)
    resp = llm.generate(args.question, system=args.system, **opts)
    _print_stream(resp)
    print(f"[{llm.describe()}] {resp.metrics}", file=sys.stderr)
    return 0


def cmd_chat(args) -> int:
    opts = _options(args)
    llm = _load(args)
    session = llm.chat(system=args.system, **opts)
    commands = "Ctrl-C stops an answer; /clear forgets; /exit or Ctrl-D quits"
    print(f"Chatting with {llm.describe()}. {commands}.", file=sys.stderr)
    while True:
        try:
            line = input("you> ").strip()
        except (EOFError, KeyboardInterrupt):
            print(file=sys.stderr)
            return 0
        if line in {"/exit", "/quit"}:
            return 0
        if line == "/clear":
            session.clear()
            print("(history cleared)", file=sys.stderr)
        elif line.startswith("/") and " " not in line:  # /help, or a typo
            print(f"({commands}; other lines are questions)", file=sys.stderr)
        elif line:
            try:
                resp = session.ask(line)
                sys.stdout.write("assistant> ")
                _print_stream(resp)
                print(f"  [{resp.metrics}]", file=sys.stderr)
            except Phi3Error as exc:  # the chat goes on after bad input
                print(f"error: {exc}", file=sys.stderr)


def cmd_devices(args) -> int:
    print(format_report(report()))
    return 0


def add_prepare(p) -> None:
    _common(p, generation=False)
    p.add_argument("--plan", action="store_true", help="phi3-mini: print what would be downloaded, and exit")
    p.add_argument("--source", choices=("hub", "export"), help="phi3-mini: the publisher's prequantized folder "
                   "(hub, the default) or a local export")


def cmd_prepare(args) -> int:
    """Export/build/fetch the folder without loading any runtime and print it; ``--plan``: what it would download."""
    from .models import MODEL_ENV, PHI3_MINI, hub

    model = args.model or os.environ.get(MODEL_ENV) or PHI3_MINI
    if not args.plan:
        plan = _load(args, plan_only=True)
        print(backend_class(plan.backend).prepare(plan).folder)
    elif model != PHI3_MINI:
        print(f"{model}: nothing to download from the hub (a local model).")
    else:
        cls = backend_class(resolve_name(args.backend, args.device, None))
        target = None
        if "target" in cls.options:  # a backend that builds per execution provider (onnx): the one asked
            target = "dml" if str(args.device or "").lower() in {"dml", "directml", "gpu"} else "cpu"
        print("\n".join(hub.plan_lines(cls.name, cls.check_precision(args.precision), target, args.source)))
    return 0


def _csv(text: str) -> list[str]:
    return [t.strip().lower() for t in text.split(",") if t.strip()]


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be 1 or more")
    return value


def add_bench(p) -> None:
    from .bench import DEFAULT_OUTPUT, FULL, QUICK

    p.add_argument("--quick", action="store_true", help="fewer configurations, runs and tokens")
    p.add_argument("--chat", action="store_true", help="time to first token per turn of a 10-turn chat (the median "
                   "of 3 chats; --quick: 4 turns, once), KV-cache reuse on and off, and the speculative decoding "
                   "speedup; writes chat.json and chat.png")
    p.add_argument("--backends", type=_csv, help="comma-separated, e.g. openvino,onnx (default: every available one)")
    p.add_argument("--precisions", type=_csv, help="comma-separated, e.g. int4,fp16 (default: all; --quick: all of "
                   "the default backend, the default of the others)")
    p.add_argument("--devices", type=_csv, help="comma-separated, e.g. CPU,GPU (default: every device found)")
    p.add_argument("--runs", type=_positive_int, help=f"timed runs per prompt (default {FULL.runs} short, "
                   f"{FULL.long_runs} long; --quick {QUICK.runs} and {QUICK.long_runs})")
    p.add_argument("--tokens", type=_positive_int, help=f"new tokens per run (default {FULL.max_new_tokens}; "
                   f"--quick {QUICK.max_new_tokens})")
    p.add_argument("--long-tokens", type=_positive_int, help=f"length of the long prompt (default {FULL.long_tokens}; "
                   f"--quick {QUICK.long_tokens}; capped by the model)")
    p.add_argument("--output", default=DEFAULT_OUTPUT, help=f"folder for bench.json and bench.png ({DEFAULT_OUTPUT})")
    p.add_argument("--model", help="phi3-mini, smollm2-135m-phi3 or a folder (default: as load() chooses)")
    p.add_argument("--llama-cpp", action="store_true", help="also llama.cpp's llama-bench on the same GGUF (built "
                   "once into the cache from llama-cpp-python's sdist, about 7 minutes; skipped, saying why, if not)")


def cmd_bench(args) -> int:
    from . import bench

    if args.chat:
        from .bench import chat

        configs = [c for c in chat.CHAT_CONFIGS if not args.backends or c[0] in args.backends]
        doc = chat.run_chat(turns=4 if args.quick else 10, max_new_tokens=args.tokens or (16 if args.quick else 64),
                            configs=configs, model=args.model, progress=lambda line: print(line, file=sys.stderr),
                            repeats=1 if args.quick else 3)
        path = chat.write(doc, args.output)
        print(chat.chat_table(doc))
        print(f"\nwrote {path} and {path.with_suffix('.png')}", file=sys.stderr)
        return 0 if doc["rows"] else 1
    keys = ("backends", "precisions", "devices", "quick", "runs", "tokens", "long_tokens", "output", "model")
    try:
        doc = bench.run(**{k: getattr(args, k) for k in keys}, llama_cpp=args.llama_cpp)
    except OSError as exc:  # e.g. the disk filled up while writing the results
        where = getattr(exc, "filename", None) or args.output
        raise InvalidOption(
            f"{exc.strerror or exc} ({where}); free some space or choose another folder with --output.") from None
    print(bench.markdown_table(doc))
    out = Path(args.output)
    print(f"\nwrote {out / 'bench.json'} and {out / 'bench.png'} in {doc['duration_s']:.0f} s", file=sys.stderr)
    return 0 if all(r.get("status") == "ok" for r in doc["results"]) else 1


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value <= 24 * 3600:  # also refuses nan and inf
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds above 0 (up to 86400); try --seconds 60")
    return value


def add_demo(p) -> None:
    _common(p, generation=False, backend="npu")
    p.add_argument("--seconds", type=_seconds, default=60.0, help="how long to keep the device busy (default 60)")
    p.add_argument("--prompt", default=DEMO_PROMPT)


def cmd_demo(args) -> int:
    """Keep a device busy generating (for Task Manager demos); exit 1 when generation failed."""
    if not args.prompt.strip():
        raise InvalidOption("--prompt is empty; leave it out to use the demo's story prompt.")
    llm = _load(args)
    print(f"Demo on {llm.describe()} for {args.seconds:.0f} s (Ctrl-C stops).", flush=True)
    st = keep_busy(llm, args.seconds, args.prompt)
    if st.error:
        print(f"error: the demo stopped because generation failed: {st.error}", file=sys.stderr)
    return 1 if st.error else 0


#: subcommand -> (help, add_arguments, run)
COMMANDS: dict[str, tuple[str, Callable, Callable]] = {
    "ask": ("stream one answer to stdout, metrics to stderr", add_ask, cmd_ask),
    "chat": ("interactive terminal chat", _common, cmd_chat),
    "devices": ("backends and devices available here, and why others are not", lambda p: None, cmd_devices),
    "prepare": ("export/build a model's folder (no runtime loads) and print it", add_prepare, cmd_prepare),
    "bench": ("benchmark every available backend; writes bench.json and bench.png", add_bench, cmd_bench),
    "demo": ("keep a device busy for a Task Manager demo, with a live tokens/s line", add_demo, cmd_demo),
    "doctor": ("check this machine's set-up and say what to fix", doctor.add_arguments, doctor.run),
}


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="phi3_helpers", description="Phi-3 on AI PCs: run the course's models from the terminal.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name, (help_text, add, run) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        add(p)
        p.set_defaults(func=run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        return args.func(args)
    except Phi3Error as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("interrupted: nothing was left half-written; run the command again to continue.", file=sys.stderr)
        return 130
