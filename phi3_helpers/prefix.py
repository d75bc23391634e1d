"""Reusing what the runtime already computed: the longest common prefix of token ids.

A chat sends the whole conversation every turn, but the runtime has already processed most of it
(the previous prompt and the answer it produced). Two pieces make that reusable:

- :class:`PrefixCache` remembers the token ids a runtime's KV cache holds and, for a new prompt,
  says how many of them can stay (the longest common prefix) and which tokens are still to prefill.
- :func:`chat_ids` builds a prompt's token ids with the ids the model really produced for earlier
  answers, so re-tokenizing an answer's text (which can split it differently) cannot defeat the reuse.
"""

from __future__ import annotations

import uuid
from typing import Callable, Iterable, Sequence

from .errors import InvalidOption


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading token ids ``a`` and ``b`` share."""
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def check_reuse_cache(value) -> bool:
    if not isinstance(value, bool):
        raise InvalidOption(f"reuse_cache must be True or False (got {value!r}); e.g. load('onnx', reuse_cache=False).")
    return value


class PrefixCache:
    """The token ids a runtime's KV cache holds, and what a new prompt can keep of them."""

    def __init__(self, enabled: bool = True, decoded_reusable: bool = True):
        self.enabled = enabled
        #: False where a runtime computes a token's keys and values slightly differently in a one-token
        #: decode step than in a prefill (onnx int4 kernels): then only prefilled tokens are reused, and
        #: the answer is prefilled again with the next turn, so reuse never changes a greedy token
        self.decoded_reusable = decoded_reusable
        self.ids: list[int] = []
        self.prefilled = 0  # how many of ``ids`` were computed in a prefill
        #: the runtime's own cache object (a DynamicCache, an og.Generator), owned by the backend
        self.runtime = None
        #: prompt tokens reused / prefilled by the last answer (for metrics and tests)
        self.last_reused = 0
        self.last_prefilled = 0

    def plan(self, prompt: Sequence[int]) -> int:
        """How many cached tokens the prompt keeps (at least one prompt token is always fed,
        since the runtime needs it to compute the first answer token's logits)."""
        usable = self.ids if self.decoded_reusable else self.ids[: self.prefilled]
        keep = min(common_prefix(usable, prompt), len(prompt) - 1) if self.enabled else 0
        keep = max(keep, 0)
        self.last_reused, self.last_prefilled = keep, len(prompt) - keep
        return keep

    def hold(self, ids: Iterable[int], prefilled: int | None = None) -> None:
        """The cache now holds exactly ``ids``, the first ``prefilled`` of them from a prefill."""
        self.ids = list(ids)
        self.prefilled = len(self.ids) if prefilled is None else min(prefilled, len(self.ids))

    def reset(self) -> None:
        """Forget the cache: the next prompt is prefilled whole."""
        self.ids = []
        self.prefilled = 0
        self.runtime = None


# -- prompt ids with the model's own answer ids ---------------------------------------------------
def _answer_ids(tokenizer, message: dict) -> list[int] | None:
    """The ids recorded for an assistant message, if they still spell its text."""
    ids = message.get("token_ids")
    if not ids:
        return None
    text = tokenizer.decode(list(ids), skip_special_tokens=True, clean_up_tokenization_spaces=False)
    return list(ids) if text == message["content"] else None  # edited since: use the text


def chat_ids(
    tokenizer,
    messages: Sequence[dict],
    render: Callable[[list[dict]], str],
    eos_ids: frozenset[int] = frozenset(),
) -> list[int] | None:
    """The prompt's token ids with the recorded ids of earlier answers, or None to tokenize the text.

    The template is rendered with a marker in place of each answer; the text between answers is
    tokenized on its own. That split is checked: with each answer's own text tokenized instead of its
    recorded ids, the pieces must give exactly the ids of the whole prompt tokenized at once.
    """
    msgs = [dict(m) for m in messages]
    slots = [i for i, m in enumerate(msgs) if m["role"] == "assistant" and _answer_ids(tokenizer, m)]
    if not slots:
        return None
    tag = uuid.uuid4().hex
    marks = [f"@@answer-{k}-{tag}@@" for k in range(len(slots))]
    marked = [dict(m) for m in msgs]
    for k, i in enumerate(slots):
        marked[i]["content"] = marks[k]
    text = render(marked)
    chunks: list[str] = []
    for mark in marks:
        head, sep, text = text.partition(mark)
        if not sep:
            return None  # the template changed the content: no safe split
        chunks.append(head)
    chunks.append(text)

    def enc(s: str) -> list[int]:
        return list(tokenizer(s, add_special_tokens=False)["input_ids"]) if s else []

    pieces = [enc(c) for c in chunks]
    as_text = pieces[0] + [t for k, i in enumerate(slots) for t in enc(msgs[i]["content"]) + pieces[k + 1]]
    if as_text != enc(render([{k: v for k, v in m.items() if k != "token_ids"} for m in msgs])):
        return None  # tokens merge across an answer's edges with this tokenizer: tokenize the text
    out = list(pieces[0])
    for k, i in enumerate(slots):
        ids = _answer_ids(tokenizer, msgs[i]) or []
        after = pieces[k + 1]
        if ids and ids[-1] in eos_ids:
            if after and after[0] == ids[-1]:
                after = after[1:]  # the answer's end token is the template's own
            else:
                ids = ids[:-1]
        out += ids + after
    return out
