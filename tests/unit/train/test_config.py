from __future__ import annotations

import json
from pathlib import Path

import pytest

from maestro.workers.train.config import ConfigError, load_spec, parse_spec

pytestmark = pytest.mark.unit

BASE = {"baseModel": {"uri": "hf://org/model"}, "datasetRef": {"name": "ds"}}


def test_defaults_come_from_the_api_model() -> None:
    cfg = parse_spec(BASE)
    assert cfg.method == "lora" and cfg.hyper.lora.target_modules == ("all-linear",)
    assert cfg.hyper.lr_scheduler == "cosine" and cfg.checkpoint_every == 500
    assert not cfg.evaluation.bias.enabled


def test_camel_case_fields_map_and_trainer_only_knobs_survive_validation() -> None:
    spec = {
        **BASE,
        "method": "full",
        "hyperparameters": {"maxSteps": 7, "batchSize": 2, "packing": True, "lrScheduler": "linear"},
        "checkpointing": {"everySteps": 3, "keepLast": 1},
        "evaluation": {
            "maxEvalLoss": 2.5,
            "prompts": [{"prompt": "Hi", "expected": "Hello"}, {"prompt": "Yo"}],
            "bias": {
                "enabled": True,
                "groups": {"age": ["young person", "old person"]},
                "templates": ["Describe the {group}."],
                "maxSentimentGap": 0.3,
            },
        },
        "output": {"merge": True},
    }
    cfg = parse_spec(spec)
    assert (cfg.method, cfg.hyper.max_steps, cfg.hyper.batch_size, cfg.hyper.packing) == ("full", 7, 2, True)
    assert (cfg.checkpoint_every, cfg.keep_last, cfg.merge) == (3, 1, True)
    assert cfg.evaluation.prompts[1].expected is None and cfg.evaluation.max_eval_loss == 2.5
    assert cfg.evaluation.bias.groups == {"age": ("young person", "old person")}
    assert cfg.evaluation.bias.max_sentiment_gap == 0.3


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"method": "lorax"}, "method"),
        ({"hyperparameters": {"batchSize": 0}}, "batchSize"),
        ({"evaluation": {"bias": {"templates": ["no placeholder"]}}}, "{group}"),
        ({"baseModel": {"uri": "ftp://x"}}, "baseModel"),
    ],
)
def test_invalid_specs_name_the_field(patch: dict, field: str) -> None:
    with pytest.raises(ConfigError, match=field.replace("{", r"\{").replace("}", r"\}")):
        parse_spec({**BASE, **patch})


def test_load_spec_from_env_file_and_manifest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAESTRO_SPEC", json.dumps(BASE))
    assert load_spec(None) == BASE
    f = tmp_path / "job.yaml"
    f.write_text(
        "apiVersion: llmops.dev/v1alpha1\nkind: LLMTrainingJob\nspec:\n  baseModel: {uri: 'hf://a/b'}\n"
    )
    assert load_spec(f) == {"baseModel": {"uri": "hf://a/b"}}
    monkeypatch.delenv("MAESTRO_SPEC")
    with pytest.raises(ConfigError, match="MAESTRO_SPEC"):
        load_spec(None)


def test_trainer_settings_are_plain_values_taken_from_the_validated_spec() -> None:
    """No second copy of the defaults, and no enums or models leak into the checkpoint fingerprint."""
    from dataclasses import asdict

    from maestro.api.training import LLMTrainingJobSpec

    cfg, api = parse_spec(BASE), LLMTrainingJobSpec.model_validate(BASE)
    assert cfg.hyper.learning_rate == api.hyperparameters.learning_rate
    assert (cfg.keep_last, cfg.evaluation.max_new_tokens) == (
        api.checkpointing.keep_last,
        api.evaluation.max_new_tokens,
    )
    assert parse_spec(api) == cfg  # a model is taken as it is
    hyper = asdict(cfg.hyper)
    assert all(type(v) in (int, float, str, bool, type(None)) for k, v in hyper.items() if k != "lora")
    assert type(cfg.method) is str and type(cfg.hyper.epochs) is float
    assert json.loads(json.dumps(hyper))["lora"]["target_modules"] == ["all-linear"]
