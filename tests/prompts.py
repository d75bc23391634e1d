"""Prompts shared by the tests (the offline model answers these sensibly)."""

FRANCE = "What is the capital of France?"

#: Greedy-token comparisons across runtimes use these.
PROMPTS = [
    FRANCE,
    "Write a haiku about the sea.",
    "Explain what a CPU does in two sentences.",
    "List three fruits.",
]

#: The course's example prompts (the chapters' parameter cells) and words their answers must contain
#: on the offline model, greedy (tests/test_prompts.py). Kept only where every chapter's backend got them right.
EXPECTED = {
    "What is the capital of France?": ["Paris"],
    "And of Italy?": ["Rome"],
    "Name three colours.": ["red", "blue", "green"],
    "Explain what a CPU does in two sentences.": ["instructions"],
}

#: Names of the prompt constants in the parameter cells.
PROMPT_NAMES = ("QUESTION", "FOLLOW_UP", "LIST_PROMPT", "CPU_PROMPT")

#: Chapter -> (backend, device) as its notebook loads it here (chapter 4 chats with what it measured fastest).
CHAPTER_BACKENDS = {"01": ("npu", None), "02": ("onnx", "auto"), "03": ("openvino", "CPU"), "04": ("openvino", "CPU")}
