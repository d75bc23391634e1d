"""One check that Stop ends generation inside the runtime, shared by every backend's tests."""

STORY = "Write a long story about a dragon who learns to cook."


def check_stop_ends_generation(llm, ask=None, unstopped: int = 48):
    """Stop after a few pieces; at most two more tokens may arrive.

    First proves that, left alone, the model would write at least ``unstopped`` tokens for this
    prompt (greedy), so an answer that ends a token or two after ``stop()`` was ended by Stop,
    not by the model. ``ask`` starts the stopped answer (default ``llm.generate``; a chat
    session's ``ask`` works too). Returns the stopped response.
    """
    left_alone = llm.generate(STORY, max_new_tokens=unstopped)
    left_alone.text()
    assert left_alone.metrics.finish_reason == "length" and left_alone.metrics.tokens == unstopped
    resp = (ask or llm.generate)(STORY, max_new_tokens=unstopped * 3)
    at_stop = None
    for i, _piece in enumerate(resp):
        if i == 3:
            at_stop = len(resp.token_ids)
            resp.stop()
    assert at_stop is not None and at_stop + 2 < unstopped
    assert resp.metrics.finish_reason == "stopped", resp.metrics.finish_reason
    assert resp.metrics.tokens <= at_stop + 2, (at_stop, resp.metrics.tokens)
    return resp
