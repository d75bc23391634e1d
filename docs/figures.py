"""Draw the course's pictures into docs/img/ (run: ``python docs/figures.py``).

Pictures are drawn by code so they stay true: every number on them is either a published figure
from the list ``FACTS`` (each with its source) or arithmetic on those figures, and a test
(tests/test_course_template.py) redraws them and compares with the committed PNGs.

- ``prefill-decode.png``: one answer on a timeline (prefill, first token, decode steps); schematic.
- ``stacks.png``: model -> format -> runtime -> device, for chapters 1, 2 and 3.
- ``decode-bound.png``: chapter 4's comparison: Phi-3-mini's size per precision and the decode
  ceiling that memory bandwidth sets for each.
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyBboxPatch  # noqa: E402

OUT = Path(__file__).resolve().parent / "img"

#: Published figures used on the pictures; each with where it comes from.
FACTS = {
    "phi3_params_b": (3.82, "https://huggingface.co/microsoft/Phi-3-mini-4k-instruct (3.82B params, bf16)"),
    "phi3_bf16_gb": (7.64, "https://huggingface.co/microsoft/Phi-3-mini-4k-instruct/tree/main (4.97 + 2.67 GB)"),
    "phi3_int8_gb": (3.82, "https://huggingface.co/OpenVINO/Phi-3-mini-4k-instruct-int8-ov/tree/main"),
    "phi3_int4_gb": (2.15, "https://huggingface.co/OpenVINO/Phi-3-mini-4k-instruct-int4-ov/tree/main"),
    # Core Ultra 7 155H: LPDDR5x up to 7467 MT/s (Intel ARK); a 128-bit bus moves 16 bytes per transfer.
    "lpddr5x_7467_gbs": (7467e6 * 16 / 1e9, "https://ark.intel.com/content/www/us/en/ark/products/236847/intel-core-ultra-7-processor-155h-24m-cache-up-to-4-80-ghz.html"),
}

#: Pictures written by this script, with the alt text the notebooks use.
ALT = {
    "prefill-decode.png": "Timeline of one answer: a long prefill block reads the whole prompt and ends at the first "
    "token (time to first token); then short decode steps, one token each, each reading all the weights.",
    "stacks.png": "Three rows, one per chapter: the Phi-3 checkpoint is exported to a format (OpenVINO IR or ONNX), "
    "run by a runtime (OpenVINO GenAI, ONNX Runtime GenAI, optimum-intel) on a device (NPU, GPU, CPU).",
    "decode-bound.png": "Bar chart: Phi-3-mini is 7.6 GB in bf16, 3.8 GB in int8 and 2.15 GB in int4; at 119 GB/s the "
    "decode ceiling is about 16, 31 and 56 tokens per second.",
}


def _save(fig, name: str, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / name
    fig.savefig(path, dpi=100, metadata={"Software": None})
    plt.close(fig)
    return path


def prefill_decode(out: Path = OUT) -> Path:
    fig, ax = plt.subplots(figsize=(9, 2.6))
    ax.barh(0, 3.0, left=0, height=0.5, color="#4c72b0")
    ax.text(1.5, 0, "prefill: the whole prompt\nin one pass (arithmetic)", ha="center", va="center", color="white")
    for i in range(8):
        ax.barh(0, 0.55, left=3.2 + i * 0.7, height=0.5, color="#dd8452")
        ax.text(3.475 + i * 0.7, 0, f"t{i + 1}", ha="center", va="center", color="white", fontsize=9)
    ax.annotate("first token\n(TTFT)", xy=(3.2, 0.3), xytext=(3.2, 0.85), ha="center", arrowprops={"arrowstyle": "->"})
    ax.annotate("decode: one token per step,\neach step reads every weight", xy=(6.0, -0.3), xytext=(6.0, -0.95),
                ha="center", arrowprops={"arrowstyle": "->"})
    ax.set_xlim(-0.2, 9.2)
    ax.set_ylim(-1.4, 1.4)
    ax.set_yticks([])
    ax.set_xticks([])
    ax.set_xlabel("time (schematic, not to scale)")
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)
    fig.tight_layout()
    return _save(fig, "prefill-decode.png", out)


ROWS = [
    ("Ch. 1 · NPU", ["Phi-3 checkpoint\n(Hugging Face, bf16)", "OpenVINO IR\nint4 sym, ratio 1.0", "OpenVINO GenAI\nLLMPipeline",
                     "NPU\n(CPU without one)"]),
    ("Ch. 2 · DirectML", ["Phi-3 checkpoint\n(Hugging Face, bf16)", "ONNX\n(model builder, int4)", "ONNX Runtime GenAI",
                          "GPU via DirectML\n(CPU elsewhere)"]),
    ("Ch. 3 · OpenVINO", ["Phi-3 checkpoint\n(Hugging Face, bf16)", "OpenVINO IR\nint4 / int8 / fp16",
                          "OpenVINO GenAI or\noptimum-intel", "CPU · GPU · NPU · AUTO"]),
]


def stacks(out: Path = OUT) -> Path:
    fig, ax = plt.subplots(figsize=(11, 4.2))
    heads = ["model", "format", "runtime", "device"]
    colours = ["#c7d7ee", "#f3d3bd", "#cde6c8", "#e4d4ee"]
    for j, head in enumerate(heads):
        ax.text(1.6 + j * 2.6, 3.25, head, ha="center", va="center", fontweight="bold")
    for i, (chapter, cells) in enumerate(ROWS):
        y = 2.4 - i * 1.1
        ax.text(-0.1, y, chapter, ha="right", va="center", fontweight="bold")
        for j, text in enumerate(cells):
            x = 0.5 + j * 2.6
            ax.add_patch(FancyBboxPatch((x, y - 0.4), 2.2, 0.8, boxstyle="round,pad=0.03", fc=colours[j], ec="#555555"))
            ax.text(x + 1.1, y, text, ha="center", va="center", fontsize=9)
            if j < len(cells) - 1:
                ax.annotate("", xy=(x + 2.55, y), xytext=(x + 2.2, y), arrowprops={"arrowstyle": "->"})
    ax.set_xlim(-2.0, 11.0)
    ax.set_ylim(-0.4, 3.6)
    ax.axis("off")
    fig.tight_layout()
    return _save(fig, "stacks.png", out)


def decode_bound(out: Path = OUT) -> Path:
    bandwidth = FACTS["lpddr5x_7467_gbs"][0]
    sizes = {"bf16 (checkpoint)": FACTS["phi3_bf16_gb"][0], "int8": FACTS["phi3_int8_gb"][0],
             "int4": FACTS["phi3_int4_gb"][0]}
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    names = list(sizes)
    left.bar(names, list(sizes.values()), color="#4c72b0")
    left.set_ylabel("GB of weights")
    left.set_title("Phi-3-mini on disk (published sizes)")
    ceilings = [bandwidth / s for s in sizes.values()]
    right.bar(names, ceilings, color="#dd8452")
    right.set_ylabel("tokens/s, at most")
    right.set_title(f"decode ceiling at {bandwidth:.0f} GB/s\n(LPDDR5X-7467, 128-bit)")
    for ax, values, fmt in ((left, list(sizes.values()), "{:.2f}"), (right, ceilings, "{:.0f}")):
        for k, v in enumerate(values):
            ax.text(k, v, fmt.format(v), ha="center", va="bottom")
        ax.margins(y=0.15)
    fig.tight_layout()
    return _save(fig, "decode-bound.png", out)


def draw_all(out: Path = OUT) -> list[Path]:
    return [prefill_decode(out), stacks(out), decode_bound(out)]


if __name__ == "__main__":
    for p in draw_all(Path(sys.argv[1]) if len(sys.argv) > 1 else OUT):
        print(p)
