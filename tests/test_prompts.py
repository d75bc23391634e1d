"""The example prompts of chapters 1-4 get right answers from the offline model (real generation, greedy).

The prompts are read from each notebook's parameters cell, so a prompt changed there is checked here, and
a prompt without expected words in tests/prompts.py fails the first test. Each chapter's prompts are asked
on the backend that chapter uses, the way it asks them: with its system prompt, follow-ups in one chat.
"""

from __future__ import annotations

import ast
from pathlib import Path

import nbformat
import pytest

from phi3_helpers import load
from prompts import CHAPTER_BACKENDS, EXPECTED, PROMPT_NAMES

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
MAX_NEW_TOKENS = 48


def parameters(chapter: str) -> dict[str, str]:
    """The string constants assigned in a chapter's parameters cell (read, not executed)."""
    path = next(NOTEBOOKS.glob(f"{chapter}-*.ipynb"))
    cell = next(c for c in nbformat.read(path, as_version=4).cells if "parameters" in c.metadata.get("tags", []))
    found = {}
    for node in ast.parse(cell.source).body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    found[target.id] = node.value.value
    return found


@pytest.mark.parametrize("chapter", sorted(CHAPTER_BACKENDS))
def test_every_example_prompt_has_expected_words(chapter):
    params = parameters(chapter)
    assert "QUESTION" in params and "SYSTEM" in params
    for name in PROMPT_NAMES:
        if name in params:
            assert params[name] in EXPECTED, f"chapter {chapter}: add expected words for {params[name]!r}"


@pytest.fixture(scope="module", params=sorted({b for b, _ in CHAPTER_BACKENDS.values() if b}))
def backend(request):
    device = next(d for b, d in CHAPTER_BACKENDS.values() if b == request.param)
    llm = load(request.param, device=device)
    yield llm
    llm.close()


def contains_all(text: str, words: list[str]) -> bool:
    return all(w.lower() in text.lower() for w in words)


def test_chapter_prompts_on_their_backend(backend):
    for chapter, (name, _) in CHAPTER_BACKENDS.items():
        if name != backend.name:
            continue
        params = parameters(chapter)
        chat = backend.chat(system=params["SYSTEM"])
        turns = [params["QUESTION"]] + ([params["FOLLOW_UP"]] if "FOLLOW_UP" in params else [])
        for question in turns:  # a question and its follow-up, in one conversation
            answer = chat.ask(question, max_new_tokens=MAX_NEW_TOKENS).text()
            assert contains_all(answer, EXPECTED[question]), f"chapter {chapter}, {question!r}: {answer!r}"
        for key in set(PROMPT_NAMES) - {"QUESTION", "FOLLOW_UP"}:
            if key in params:
                messages = [{"role": "system", "content": params["SYSTEM"]}, {"role": "user", "content": params[key]}]
                answer = backend.generate(messages, max_new_tokens=MAX_NEW_TOKENS).text()
                assert contains_all(answer, EXPECTED[params[key]]), f"chapter {chapter}, {params[key]!r}: {answer!r}"
