"""Generation options: one small typed object; unknown fields and bad values are refused."""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

from .errors import InvalidOption


def _real(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclasses.dataclass(frozen=True)
class GenerationOptions:
    """Greedy by default (reproducible answers); a temperature above 0 samples unless ``do_sample=False``."""

    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    do_sample: bool | None = None

    def __post_init__(self) -> None:
        m, t, p = self.max_new_tokens, self.temperature, self.top_p
        if isinstance(m, bool) or not isinstance(m, int) or m <= 0:
            raise InvalidOption(f"max_new_tokens must be a whole number above 0 (got {m!r}); try max_new_tokens=256.")
        if not _real(t) or t < 0:
            raise InvalidOption(
                f"temperature must be 0 or more (got {t!r}); use 0 for greedy answers or about 0.7 for varied ones."
            )
        if not _real(p) or not 0 < p <= 1:
            raise InvalidOption(f"top_p must be in (0, 1] (got {p!r}); use 1.0 to turn it off.")
        if self.do_sample is not None and not isinstance(self.do_sample, bool):
            raise InvalidOption(f"do_sample must be True or False (got {self.do_sample!r}).")
        if self.do_sample and t == 0:
            raise InvalidOption(
                "do_sample=True needs temperature > 0; set temperature=0.7, or drop do_sample for greedy."
            )
        object.__setattr__(self, "temperature", float(t))
        object.__setattr__(self, "top_p", float(p))

    @property
    def sampling(self) -> bool:
        """True when tokens are sampled, False for greedy decoding."""
        return self.temperature > 0 if self.do_sample is None else self.do_sample

    @classmethod
    def make(cls, base: GenerationOptions | Mapping[str, Any] | None = None, **overrides: Any) -> GenerationOptions:
        """Options from a base (options or dict) plus keyword overrides; unknown names are refused."""
        values = dataclasses.asdict(base) if isinstance(base, GenerationOptions) else dict(base or {})
        values.update({k: v for k, v in overrides.items() if v is not None})
        known = sorted(f.name for f in dataclasses.fields(cls))
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise InvalidOption(f"unknown option {unknown[0]!r}; valid options are: {', '.join(known)}.")
        return cls(**values)
