"""The one check for numbers read from outside (versions, lengths, process ids)."""

from __future__ import annotations

import pytest

from mloop.names import decimal


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("7", 7),
        ("000123", 123),
        ("999999999", 999_999_999),
        ("1000000000", None),  # ten digits: beyond the default nine
        ("9" * 5000, None),  # Python refuses to convert beyond 4,300 digits
        ("²", None),  # isdigit() is true, int() fails
        ("٣", None),  # Arabic-Indic three: int() reads it as 3
        ("", None),
        ("+1", None),
        ("-1", None),
        (" 1", None),
        ("1_000", None),
        ("1.0", None),
    ],
)
def test_only_plain_ascii_digits_within_the_bound_are_a_number(text: str, expected: int | None) -> None:
    assert decimal(text) == expected


def test_the_bound_is_the_callers() -> None:
    assert decimal("1" * 18, 18) == int("1" * 18)
    assert decimal("1" * 19, 18) is None
