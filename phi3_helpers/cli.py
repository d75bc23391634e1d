"""Command line: python -m phi3_helpers {ask,chat,devices,prepare,bench,demo} ...

Bad input exits with code 2 and one line on stderr that says how to fix it.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

from .errors import Phi3Error

EXIT_BAD_INPUT = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, not usage + message
        self.exit(EXIT_BAD_INPUT, f"error: {message} (see: python -m phi3_helpers {self.prog.split()[-1]} --help)\n")


def _common(p: argparse.ArgumentParser, generation: bool = True) -> None:
    from .backends import BACKENDS

    p.add_argument("--backend", default="openvino", help=f"one of {', '.join(BACKENDS)} (default: openvino); npu: PHI3_NPU_PATH=classic for the archived intel-npu-acceleration-library")
    p.add_argument("--precision", default=None, help="int4, int8, fp16 (openvino/onnx/npu), fp32 (transformers, onnx); default: the backend's first")
    p.add_argument("--device", default=None, help="CPU, GPU, NPU or AUTO (default: CPU; --backend npu: the NPU if present, else CPU; onnx: auto, dml, cuda, cpu; see `devices`)")
    p.add_argument("--model", default=None, help="phi3-mini, smollm2-135m-phi3 or a folder (default: $PHI3_MODEL, else phi3-mini online, else offline)")
    if generation:
        p.add_argument("--max-new-tokens", type=int, default=256)
        p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default), about 0.7 for varied answers")
        p.add_argument("--top-p", type=float, default=1.0)
        p.add_argument("--system", default=None, help="system prompt")


def _options(args) -> dict:
    from .options import GenerationOptions

    return {"options": GenerationOptions.make(None, max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p)}


def _load(args):
    from . import load

    extra = {"source": args.source} if getattr(args, "source", None) else {}
    return load(args.backend, model=args.model, device=args.device, precision=args.precision, **extra)


def cmd_ask(args) -> int:
    if not args.question.strip():
        raise_empty()
    opts = _options(args)  # validate before the (slow) load
    llm = _load(args)
    resp = llm.generate(args.question, system=args.system, **opts)
    _print_stream(resp)
    print(f"[{llm.describe()}] {resp.metrics}", file=sys.stderr)
    return 0


def _print_stream(resp) -> None:
    """Write the answer as it streams; Ctrl-C stops it inside the runtime (not just the display)."""
    try:
        for piece in resp:
            sys.stdout.write(piece)
            sys.stdout.flush()
    except KeyboardInterrupt:
        resp.stop()
    sys.stdout.write("\n")


def raise_empty():
    from .errors import EmptyPrompt

    raise EmptyPrompt('the question is empty; try: python -m phi3_helpers ask "What is the capital of France?"')


def cmd_chat(args) -> int:
    opts = _options(args)["options"]
    llm = _load(args)
    session = llm.chat(system=args.system)
    session.options = opts
    print(f"Chatting with {llm.describe()}. Ctrl-C stops an answer; /clear forgets; /exit or Ctrl-D quits.", file=sys.stderr)
    while True:
        try:
            line = input("you> ")
        except (EOFError, KeyboardInterrupt):
            print(file=sys.stderr)
            return 0
        cmd = line.strip()
        if not cmd:
            continue
        if cmd in {"/exit", "/quit"}:
            return 0
        if cmd == "/clear":
            session.clear()
            print("(history cleared)", file=sys.stderr)
            continue
        try:
            resp = session.ask(line)
            sys.stdout.write("assistant> ")
            _print_stream(resp)
            print(f"  [{resp.metrics}]", file=sys.stderr)
        except Phi3Error as exc:  # the chat goes on after bad input
            print(f"error: {exc}", file=sys.stderr)


def cmd_devices(args) -> int:
    from .devices import format_report, report

    print(format_report(report()))
    return 0


def cmd_plan(args) -> int:
    """What `prepare` would download for phi3-mini (repos, files, sizes, free disk); downloads nothing."""
    import os

    from .models import MODEL_ENV, PHI3_MINI, hub

    model = args.model or os.environ.get(MODEL_ENV) or PHI3_MINI
    if model != PHI3_MINI:
        print(f"{model}: nothing to download from the hub (a local model).")
        return 0
    backend, target = args.backend.strip().lower(), None
    precision = args.precision or {"transformers": "fp32", "onnx": "int4", "npu": "int4"}.get(backend, "int4")
    if backend == "onnx":
        target = "dml" if str(args.device or "").lower() in {"dml", "directml", "gpu"} else "cpu"
    print("\n".join(hub.plan_lines(backend, precision, target, args.source)))
    return 0


def cmd_prepare(args) -> int:
    if args.plan:
        return cmd_plan(args)
    if args.backend.strip().lower() == "transformers":
        # PyTorch loads the Hugging Face folder as it is: nothing to export, so don't load it.
        from .backends import backend_class
        from .models import check_model_folder, resolve_model

        backend_class("transformers")
        model = resolve_model(args.model)
        check_model_folder(model.folder)
        print(model.folder)
        return 0
    llm = _load(args)
    print(getattr(llm, "prepared_folder", None) or llm.model.folder)
    return 0


def _delegate(module: str, argv: Sequence[str]) -> int:
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError:
        print(f"error: {module} is not part of this installation; update the repository.", file=sys.stderr)
        return EXIT_BAD_INPUT
    return int(mod.main(list(argv)) or 0)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="phi3_helpers", description="Phi-3 on AI PCs: run the course's models from the terminal.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    p = sub.add_parser("ask", help="stream one answer to stdout, metrics to stderr")
    p.add_argument("question")
    _common(p)
    p.set_defaults(func=cmd_ask)
    p = sub.add_parser("chat", help="interactive terminal chat")
    _common(p)
    p.set_defaults(func=cmd_chat)
    p = sub.add_parser("devices", help="backends and devices available here, and why others are not")
    p.set_defaults(func=cmd_devices)
    p = sub.add_parser("prepare", help="build/export a model and print its folder")
    _common(p, generation=False)
    p.add_argument("--plan", action="store_true", help="print what would be downloaded (repos, files, sizes, free disk) and exit")
    p.add_argument("--source", choices=("hub", "export"), default=None,
                   help="phi3-mini: the publisher's prequantized folder (hub, default) or a local export from the checkpoint")
    p.set_defaults(func=cmd_prepare)
    sub.add_parser("bench", help="benchmark every available backend (see bench --help)", add_help=False)
    sub.add_parser("demo", help="keep a device busy for a Task Manager demo (see demo --help)", add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in {"bench", "demo"}:
        return _delegate(f"phi3_helpers.{argv[0]}", argv[1:])
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except Phi3Error as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("interrupted: nothing was left half-written; run the command again to continue.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
