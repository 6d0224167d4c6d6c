"""Numbers below the smallest double: every spelling is found, real zeros are not refused."""

from __future__ import annotations

import pytest

from home.errors import SchemaError
from home.exactness import loads_exact, may_underflow, refuse_inexact

UNDERFLOWING = [
    "1e-400", "-1e-400", "1E-400", "9.9e-325", "2.4703282292062327e-324", "123e-400", "1e-0400", "0.0000001e-320",
    "0." + "0" * 330 + "1", "0." + "0" * 250 + "7e-80", "-0." + "0" * 226 + "5e-99",
]
ZEROS_AND_DOUBLES = ["0e-400", "-0.0e-999", "0." + "0" * 400, "5e-324", "2.5e-324", "1e-300", "0." + "0" * 250 + "1e80"]


@pytest.mark.parametrize("literal", UNDERFLOWING)
def test_every_spelling_of_a_number_below_a_double_is_refused(literal: str) -> None:
    assert float(literal) == 0.0, "the premise: a double reads it as zero"
    body = f'{{"records": [{{"inputs": {{"x": {literal}}}}}]}}'.encode()
    assert may_underflow(body)
    with pytest.raises(SchemaError, match=r"records\[0\]\.inputs\.x: expected a number a double can hold"):
        refuse_inexact(loads_exact(body))


@pytest.mark.parametrize("literal", ZEROS_AND_DOUBLES)
def test_zeros_and_doubles_pass(literal: str) -> None:
    document = loads_exact(f'{{"x": {literal}}}'.encode())
    refuse_inexact(document)
    assert document["x"] == float(literal)


def test_ordinary_bodies_are_not_read_twice() -> None:
    # Small exponents of every day (1.2e-05) and ids with "e-" and digits in them do not
    # trigger the second, exact reading (which costs as much as the whole parse again).
    assert not may_underflow(b'{"a": 1.2e-05, "b": 3.4E-12, "c": 0.001, "d": 1e-99}')
    assert not may_underflow(b'{"id": "0b5a6b8e-4123-4c1e-8123-9e0000000000", "sha": "E-1234", "x": [1e-99]}')


@pytest.mark.parametrize("end", [",", "}", "]", " ", "\n"])
def test_a_number_below_a_double_is_found_wherever_it_ends(end: str) -> None:
    assert may_underflow(f'[1e-400{end}'.encode()) and may_underflow(f'[1E-4000{end}'.encode())
