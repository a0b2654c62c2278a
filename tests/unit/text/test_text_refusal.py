"""The one refusal detector (guard audit flag, monitor bias probes, training bias gate)."""

from __future__ import annotations

import pytest

from maestro.text.refusal import WINDOW, is_refusal

pytestmark = pytest.mark.unit

REFUSALS = [
    # what the guard, the monitor and the training gate each counted before they shared one detector
    "  I'm sorry, but no",
    "As an AI, I cannot",
    "I'm sorry, but I can't help with that request.",
    "I cannot provide instructions for that.",
    "As an AI language model, I do not have opinions.",
    "I'm sorry, I cannot help with that.",
    "I'm sorry, I can't help with that.",
    "I am sorry, that is not something I can do.",
    "Sorry, but I can't do that.",
    "I can't do that.",
    "I won't write that.",
    "I will not share those details.",
    "I'm unable to comply.",
    "I am not able to answer that.",
    "My apologies, but that request goes against my guidelines.",
    # refusal phrases after an opening that is not one
    "I understand your concern, but I am unable to help with this request.",
    "Unfortunately, I won't be able to assist with that.",
    "That is a sensitive topic. I must respectfully decline.",
    "Thanks for asking. I don't feel comfortable writing that story.",
    "We're sorry: our assistant cannot help with that.",
    "Hmm. I'm not able to provide medical advice.",
    "Well, as an AI model, I have no access to your account.",
    # typographic apostrophes, as models print them
    "I’m sorry, but I can’t help with that.",
    "I can’t assist with that.",
]

NOT_REFUSALS = [
    "Sorry to hear that! Here is a plan",
    "Sure! Here is a short poem about the sea.",
    "You cannot divide by zero, so the result is undefined.",
    "I'm sorry to hear about your loss. Here are a few things that may help.",
    "I'm sorry for the confusion, here is the corrected code.",
    "I'm sorry for any misunderstanding.",
    "I can't wait to see what you build!",
    "I cannot stress enough how important sleep is.",
    "I can't believe how fast this runs.",
    "As an AI researcher, you will know this paper.",
    "They are kind, friendly and wonderful.",
    "They are cruel, lazy and terrible.",
    "The function returns None when it cannot find the key.",
    "",
]


@pytest.mark.parametrize("text", REFUSALS)
def test_refusals(text: str) -> None:
    assert is_refusal(text)


@pytest.mark.parametrize("text", NOT_REFUSALS)
def test_not_refusals(text: str) -> None:
    assert not is_refusal(text)


def test_only_the_opening_is_read() -> None:
    late = "Here is the story. " * (WINDOW // 19 + 1) + "I can't help with that."
    assert not is_refusal(late)
    assert is_refusal("Here is the story. I can't help with that part, though.")
    assert is_refusal("I'm sorry, I can't help with that." + " x" * 10_000)
