"""Names that differ between the transformers releases we support (5.2 up to, not including, 6).

transformers renamed the cache argument of `forward`/`generate` and the cache field of model outputs
from `past_key_values` to `cache` during 5.x; the old name warns ("`past_key_values` is deprecated ...
Use `cache` instead") and goes away in 6.0. Every call that hands a cache to transformers or reads one
back goes through these two functions, so the core uses the new name wherever it exists and the old one
only on releases that know nothing else (`tests/test_compat.py` fails if either stops working).
"""

from __future__ import annotations

import inspect
from functools import lru_cache
from typing import Any


@lru_cache(maxsize=None)
def _forward_parameters(model_class: type) -> frozenset[str]:
    return frozenset(inspect.signature(model_class.forward).parameters)


def cache_argument(model) -> str:
    """The keyword under which `model.forward` / `model.generate` take a cache: "cache" or "past_key_values"."""
    return "cache" if "cache" in _forward_parameters(type(model)) else "past_key_values"


def output_cache(output) -> Any:
    """The cache a forward returned (`output.cache`, or `output.past_key_values` on older releases)."""
    if "cache" in getattr(type(output), "__dataclass_fields__", {}):
        return output.cache
    return output.past_key_values
