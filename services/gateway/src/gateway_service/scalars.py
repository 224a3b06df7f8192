"""What JSON body values and path/query text share when they become protobuf scalars."""

from __future__ import annotations

import math
import re

__all__ = ["FLOAT_TEXT", "INT_TEXT", "SPECIAL_FLOATS", "float_in_range", "integer_range"]

INT_TEXT = re.compile(r"^-?[0-9]+$")
FLOAT_TEXT = re.compile(r"^-?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?$")
# proto3 JSON spells the special values as strings.
SPECIAL_FLOATS = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
_FLOAT32_MAX = 3.4028234663852886e38


def integer_range(bits: int, signed: bool) -> tuple[int, int, str]:
    """(lowest, highest, a description for error messages) of an integer field."""
    if signed:
        return -(1 << (bits - 1)), (1 << (bits - 1)) - 1, f"a {bits}-bit integer"
    return 0, (1 << bits) - 1, f"an unsigned {bits}-bit integer"


def float_in_range(number: float, single: bool) -> bool:
    """Whether a parsed number fits a double (or, when single, a float) field; infinity never does."""
    return not math.isinf(number) and not (single and abs(number) > _FLOAT32_MAX)
