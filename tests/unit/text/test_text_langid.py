"""Language identification: the fast stage (`detect`, what the monitor uses) and the stage with the
py3langid model behind it (`detect_with_model`, what the dataset worker uses)."""

from __future__ import annotations

from pathlib import Path

import pytest

from maestro.text import langid

pytestmark = pytest.mark.unit

CORPUS = Path(__file__).with_name("langid_corpus.tsv")

# Document-length and script cases both stages must get right (the data worker's and the monitor's
# former tests, merged).
CASES = [
    ("The committee said that it would publish the results of the review as soon as it was ready.", "en"),
    ("Der Ausschuss sagte, dass er die Ergebnisse veröffentlichen wird, sobald sie fertig sind.", "de"),
    ("Le comité a dit qu'il publiera les résultats de l'examen dès qu'ils seront prêts pour nous.", "fr"),
    ("El comité dijo que publicará los resultados de la revisión tan pronto como estén listos.", "es"),
    ("Il comitato ha detto che pubblicherà i risultati della revisione non appena saranno pronti.", "it"),
    ("O comitê disse que vai publicar os resultados da revisão assim que estiverem prontos.", "pt"),
    ("De commissie zei dat ze de resultaten van de beoordeling zal publiceren zodra die klaar zijn.", "nl"),
    ("Комитет заявил, что опубликует результаты проверки, как только они будут готовы.", "ru"),
    ("委员会表示，审查结果一旦准备好就会公布。", "zh"),
    ("委員会は、審査の結果が準備でき次第公表すると述べた。", "ja"),
    ("위원회는 검토 결과가 준비되는 대로 발표하겠다고 말했다.", "ko"),
    ("قالت اللجنة إنها ستنشر نتائج المراجعة بمجرد أن تكون جاهزة.", "ar"),
    ("The weather is nice today and I think that we should go for a walk.", "en"),
    ("El perro de la casa es muy grande y no come por la noche.", "es"),
    ("Le chat est sur la table avec les enfants et il dort.", "fr"),
    ("Der Hund ist nicht in dem Haus und die Katze schläft.", "de"),
    ("Привет, как у тебя дела сегодня вечером?", "ru"),
    ("Привіт, як справи? Ми їдемо до Києва.", "uk"),
    ("今日は天気がいいですね。散歩に行きましょう。", "ja"),
    ("这是一个关于天气的中文句子。", "zh"),
    ("The cat is on the table and it is sleeping.", "en"),
]
# Too little to go on: both stages say so instead of guessing.
UNDETERMINED = ["ok", "12345 !!!", "12345 67890 !!!", "", "   ", "xD", "lol ok"]


def _corpus() -> list[tuple[str, str]]:
    rows = []
    for line in CORPUS.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            lang, text = line.split("\t", 1)
            rows.append((lang, text))
    return rows


@pytest.mark.parametrize("detect", [langid.detect, langid.detect_with_model], ids=["fast", "model"])
@pytest.mark.parametrize(("text", "lang"), CASES)
def test_languages(detect, text: str, lang: str) -> None:
    assert detect(text) == lang


@pytest.mark.parametrize("detect", [langid.detect, langid.detect_with_model], ids=["fast", "model"])
@pytest.mark.parametrize("text", UNDETERMINED)
def test_too_little_evidence_is_undetermined(detect, text: str) -> None:
    assert detect(text) == langid.UNDETERMINED


def test_corpus_accuracy() -> None:
    """The numbers the module docstring quotes: the fast stage abstains on short texts rather than
    guessing; with the model, every chat-length sentence of the corpus is named right."""
    rows = _corpus()
    assert len(rows) == 140 and {lang for lang, _ in rows} == {"en", "de", "fr", "es", "it", "pt", "nl"}
    fast = [langid.detect(t) for _, t in rows]
    wrong_fast = sum(g not in (lang, langid.UNDETERMINED) for (lang, _), g in zip(rows, fast, strict=True))
    right_fast = sum(g == lang for (lang, _), g in zip(rows, fast, strict=True))
    assert right_fast >= 0.75 * len(rows) and wrong_fast <= 0.05 * len(rows)
    model = [langid.detect_with_model(t) for _, t in rows]
    misses = [(lang, g, t) for (lang, t), g in zip(rows, model, strict=True) if g != lang]
    assert len(misses) <= 2, misses


def test_words_argument_is_the_lowercased_split() -> None:
    text = "Le chat est sur la table avec les enfants et il dort."
    assert langid.detect(text, text.lower().split()) == langid.detect(text) == "fr"
    assert langid.detect_with_model(text, text.lower().split()) == "fr"


def test_model_names_languages_the_fast_stage_does_not_know() -> None:
    assert langid.detect("Hyvää huomenta, mitä sinulle kuuluu tänään?") == langid.UNDETERMINED
    assert langid.detect_with_model("Hyvää huomenta, mitä sinulle kuuluu tänään?") == "fi"


def test_without_the_model_the_fast_answer_stands(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(langid, "_model", None)
    monkeypatch.setattr(langid, "_model_missing", True)  # as after a failed `import py3langid`
    assert langid.detect_with_model("Muchas gracias por tu rápida respuesta.") == langid.detect(
        "Muchas gracias por tu rápida respuesta."
    )
    assert langid.detect_with_model(CASES[0][0]) == "en"
