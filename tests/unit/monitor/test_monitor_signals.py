from __future__ import annotations

import pytest

from maestro.text.langid import detect as fallback_language  # the monitor's detector is maestro.text's
from maestro.text.refusal import is_refusal
from maestro.workers.monitor.signals import UNDETERMINED, TextAnalyzer

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("text", "lang"),
    [
        ("The weather is nice today and I think that we should go for a walk.", "en"),
        ("El perro de la casa es muy grande y no come por la noche.", "es"),
        ("Le chat est sur la table avec les enfants et il dort.", "fr"),
        ("Der Hund ist nicht in dem Haus und die Katze schläft.", "de"),
        ("Привет, как у тебя дела сегодня вечером?", "ru"),
        ("今日は天気がいいですね。散歩に行きましょう。", "ja"),
        ("这是一个关于天气的中文句子。", "zh"),
        ("ok", UNDETERMINED),
        ("12345 !!!", UNDETERMINED),
    ],
)
def test_fallback_language(text: str, lang: str) -> None:
    assert fallback_language(text) == lang


def test_refusals() -> None:
    assert is_refusal("I'm sorry, but I can't help with that request.")
    assert is_refusal("I cannot provide instructions for that.")
    assert is_refusal("As an AI language model, I do not have opinions.")
    assert not is_refusal("Sure! Here is a short poem about the sea.")
    assert not is_refusal("You cannot divide by zero, so the result is undefined.")


def test_analyzer_scores() -> None:
    a = TextAnalyzer()
    assert a.has_sentiment  # vaderSentiment is part of the monitor extra
    good = a.sentiment("This is wonderful, thank you so much, I love it!")
    bad = a.sentiment("This is terrible and awful, I hate it.")
    assert good is not None and bad is not None and good > 0.5 > -0.5 > bad
    assert a.sentiment("   ") is None
    assert a.profane("what the fuck is this")
    assert not a.profane("a classic Scunthorpe problem")  # whole words only
    assert a.language("The cat is on the table and it is sleeping.") == "en"
