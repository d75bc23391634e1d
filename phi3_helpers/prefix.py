"""Reusing the KV cache between chat turns: which token ids the runtime's cache holds and how many a new prompt
keeps, and a chat prompt built with the ids the model produced for earlier answers (so they stay reusable)."""

from __future__ import annotations

import uuid
from typing import Callable, Iterable, Sequence


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


class PrefixCache:
    """The token ids a runtime's KV cache holds, and what a new prompt can keep of them.

    ``decoded_reusable=False`` where a decode step computes keys and values slightly differently than a prefill
    (onnx int4 and fp16 kernels; fp32 is exact): an answer is then prefilled again, so reuse never changes a token.
    """

    def __init__(self, enabled: bool = True, decoded_reusable: bool = True):
        self.enabled = enabled
        self.decoded_reusable = decoded_reusable
        self.ids: list[int] = []
        self.prefilled = 0  # how many of ``ids`` were computed in a prefill
        self.runtime = None  # the runtime's own cache object (a DynamicCache, an og.Generator)
        self.last_reused = self.last_prefilled = 0

    def plan(self, prompt: Sequence[int]) -> int:
        """How many cached tokens the prompt keeps; its last token is always fed (it gives the first logits)."""
        usable = self.ids if self.decoded_reusable else self.ids[: self.prefilled]
        keep = max(min(common_prefix(usable, prompt), len(prompt) - 1), 0) if self.enabled else 0
        self.last_reused, self.last_prefilled = keep, len(prompt) - keep
        return keep

    def hold(self, ids: Iterable[int], prefilled: int | None = None) -> None:
        """The cache now holds exactly ``ids``, the first ``prefilled`` of them from a prefill."""
        self.ids = list(ids)
        self.prefilled = len(self.ids) if prefilled is None else min(prefilled, len(self.ids))

    def reset(self) -> None:
        self.ids, self.prefilled, self.runtime = [], 0, None


def chat_ids(
    tokenizer, messages: Sequence[dict], render: Callable[[list[dict]], str], eos_ids: frozenset[int] = frozenset()
) -> list[int] | None:
    """The prompt's ids with the recorded ``token_ids`` of earlier answers, or None to tokenize the text.

    The template is rendered with a marker in place of each answer and the text between them tokenized alone;
    the split is used only if, with each answer's text in place of its ids, it gives the whole prompt's ids.
    """

    def encode(texts: list[str]) -> list[list[int]]:  # one call: cost is per call
        return [list(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]

    msgs = [{k: v for k, v in m.items() if k != "token_ids"} for m in messages]
    answers = {i: list(m["token_ids"]) for i, m in enumerate(messages)
               if m["role"] == "assistant" and m.get("token_ids")}
    if not answers:
        return None
    texts = tokenizer.batch_decode(list(answers.values()), skip_special_tokens=True, clean_up_tokenization_spaces=False)
    recorded = {i: ids for (i, ids), t in zip(answers.items(), texts) if t == msgs[i]["content"]}  # not edited
    if not recorded:
        return None
    marks = {i: f"@@answer-{i}-{uuid.uuid4().hex}@@" for i in recorded}
    text = render([dict(m, content=marks[i]) if i in marks else m for i, m in enumerate(msgs)])
    chunks = []
    for mark in marks.values():
        head, found, text = text.partition(mark)
        if not found:
            return None  # the template changed the content: no safe split
        chunks.append(head)
    *parts, whole = encode([*chunks, text, *(msgs[i]["content"] for i in recorded), render(msgs)])
    (first, *rest), contents = parts[: len(recorded) + 1], parts[len(recorded) + 1:]
    as_text, out = list(first), list(first)
    for (i, ids), after, content in zip(recorded.items(), rest, contents):
        as_text += content + after
        if ids[-1] in eos_ids:
            if after[:1] == ids[-1:]:
                after = after[1:]  # the answer's end token is the template's own
            else:
                ids = ids[:-1]
        out += ids + after
    return out if as_text == whole else None  # else tokens merge across an answer's edges
