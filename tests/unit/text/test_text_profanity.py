"""The one profanity list: word counts for the dataset worker, a yes/no for the monitor."""

from __future__ import annotations

import pytest

from maestro.text import profanity

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("words", "n"),
    [
        (["what", "the", "fuck,", "this", "is", "shit!"], 2),
        (["a", "perfectly", "clean", "sentence"], 0),
        (["scunthorpe", "is", "a", "town"], 0),
        (["(shit)", "and", '"crap".', "again"], 2),
        (["bullshit...", "fuck!!", "damn?!"], 3),
        (["shitake", "mushrooms", "class", "assess"], 0),
        ([], 0),
    ],
)
def test_count(words: list[str], n: int) -> None:
    assert profanity.count(words) == n


@pytest.mark.parametrize(
    ("text", "profane"),
    [
        ("what the fuck is this", True),
        ("What The FUCK is this", True),
        ("That was bullshit.", True),
        ("a classic Scunthorpe problem", False),  # whole words only
        ("an assessment of the cockpit", False),
        ("", False),
    ],
)
def test_contains_agrees_with_count(text: str, profane: bool) -> None:
    assert profanity.contains(text) is profane
    assert (profanity.count(text.lower().split()) > 0) is profane


def test_custom_lexicon() -> None:
    lex = profanity.Lexicon(["Darn", "heck"])
    assert lex.contains("Well, DARN it!") and lex.count(["heck,", "darn", "fine"]) == 2
    assert not lex.contains("what the fuck")  # the custom list replaces the built-in one
