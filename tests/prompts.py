"""Prompts shared by the tests (the offline model answers these sensibly)."""

FRANCE = "What is the capital of France?"

#: Greedy-token comparisons across runtimes use these.
PROMPTS = [FRANCE, "Write a haiku about the sea.", "Explain what a CPU does in two sentences.", "List three fruits."]
