"""What the exercise tests share: a checker must accept a right answer, and reject a wrong
one with a message that names the mistake."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from atcourse.exercises import ExerciseError


def rejects(checker: Callable[[Any], None], answer: Any, *words: str) -> str:
    """Assert that ``checker`` rejects ``answer`` with a message holding every word."""
    with pytest.raises(ExerciseError) as info:
        checker(answer)
    message = str(info.value)
    for word in words:
        assert word in message, message
    return message


def accepts(checker: Callable[[Any], None], answer: Any, capsys: pytest.CaptureFixture) -> None:
    """Assert that ``checker`` accepts ``answer`` and says so with a line starting with ✓."""
    checker(answer)
    assert capsys.readouterr().out.startswith("✓")
