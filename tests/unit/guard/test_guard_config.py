"""Policy parsing and key loading: the shapes the operator renders, and the errors a user sees."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from maestro.workers.guard.auth import authenticate, bearer_token, keys_signature, load_keys
from maestro.workers.guard.config import NO_POLICY, PolicyError, file_signature, load_policy, parse_policy
from maestro.workers.guard.errors import GuardError

pytestmark = pytest.mark.unit

FULL = {
    "name": "prod",
    "digest": "abc",
    "servedModelName": "tiny",
    "request": {
        "auth": {
            "apiKeysSecretRef": {"name": "keys"},
            "keys": [
                {"id": "alice", "allowedModels": ["tiny"], "requestsPerMinute": 5, "tokensPerMinute": 900}
            ],
        },
        "rateLimits": {"requestsPerMinute": 60, "tokensPerMinute": 1000},
        "pii": {"input": "block", "output": "redact", "entities": ["EMAIL", "PHONE"]},
        "blockedTerms": ["forbidden", "c++"],
        "blockedPatterns": [r"sec\d+"],
        "maxInputTokens": 100,
        "maxOutputTokens": 50,
        "maxRequestBytes": 4096,
        "allowedModels": ["tiny"],
        "streamingOutputMode": "buffer",
        "outputWindow": {"chars": 128, "overlap": 32},
        "timeouts": {"connectSeconds": 1, "readSeconds": 2},
    },
    "audit": {"enabled": True, "logPrompts": True},
}


def test_full_policy_parses_every_field() -> None:
    p = parse_policy(FULL)
    assert (p.name, p.digest, p.served_model_name) == ("prod", "abc", "tiny")
    assert p.auth_required and p.keys["alice"].allowed_models == {"tiny"}
    assert p.keys["alice"].requests_per_minute == 5 and p.keys["alice"].tokens_per_minute == 900
    assert (p.requests_per_minute, p.tokens_per_minute) == (60, 1000)
    assert (p.pii_input, p.pii_output, p.pii_entities) == ("block", "redact", {"EMAIL", "PHONE"})
    assert (p.max_input_tokens, p.max_output_tokens, p.max_request_bytes) == (100, 50, 4096)
    assert p.allowed_models == {"tiny"} and p.output_mode == "buffer"
    assert (p.window_chars, p.window_overlap) == (128, 32)
    assert (p.connect_timeout_s, p.read_timeout_s) == (1, 2)
    assert p.log_prompts and p.audit_enabled and p.output_checks


def test_blocked_terms_are_words_case_insensitive_and_patterns_regex() -> None:
    p = parse_policy(FULL)
    assert p.blocked is not None
    assert p.blocked.search("this is FORBIDDEN here")
    assert not p.blocked.search("unforbiddenness")  # whole words only
    assert p.blocked.search("I like C++ a lot")  # terms ending in punctuation still match
    m = p.blocked.search("token sec123")
    assert m and p.blocked_rules[int(m.lastgroup[1:])] == "blockedPatterns[0]"


def test_crd_defaults_apply_open_endpoint_without_auth_block() -> None:
    p = parse_policy({"request": {}, "audit": {}})
    assert not p.auth_required  # no auth block: open, as the CRD documents
    assert (p.pii_input, p.pii_output) == ("redact", "redact")  # CRD default
    assert p.output_mode == "window" and p.max_request_bytes == 1024 * 1024
    assert p.audit_enabled and not p.log_prompts


@pytest.mark.parametrize(
    ("request_", "needle"),
    [
        ({"pii": {"input": "shred"}}, "request.pii.input"),
        ({"blockedPatterns": ["(unclosed"]}, "request.blockedPatterns"),
        ({"outputWindow": {"chars": 64, "overlap": 64}}, "overlap"),
        ({"maxRequestBytes": "big"}, "request.maxRequestBytes"),
        ({"auth": {"required": True}}, "apiKeysSecretRef"),
        ({"streamingOutputMode": "later"}, "request.streamingOutputMode"),
    ],
)
def test_invalid_policy_names_the_field(request_: dict[str, object], needle: str) -> None:
    with pytest.raises(PolicyError, match=needle.replace(".", r"\.")):
        parse_policy({"request": request_})


def test_load_policy_missing_file_is_no_policy_and_bad_json_raises(tmp_path: Path) -> None:
    assert load_policy(tmp_path / "absent.json") is NO_POLICY
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(PolicyError, match="not valid JSON"):
        load_policy(bad)
    bad.write_text("[]")
    with pytest.raises(PolicyError, match="JSON object"):
        load_policy(bad)


def test_file_signature_follows_configmap_symlink_swap(tmp_path: Path) -> None:
    (tmp_path / "v1").mkdir()
    (tmp_path / "v2").mkdir()
    (tmp_path / "v1" / "policy.json").write_text(json.dumps({"name": "a"}))
    (tmp_path / "v2" / "policy.json").write_text(json.dumps({"name": "b"}))
    (tmp_path / "..data").symlink_to("v1")
    (tmp_path / "policy.json").symlink_to("..data/policy.json")
    before = file_signature(tmp_path / "policy.json")
    (tmp_path / "..data_tmp").symlink_to("v2")
    (tmp_path / "..data_tmp").rename(tmp_path / "..data")
    assert file_signature(tmp_path / "policy.json") != before
    assert load_policy(tmp_path / "policy.json").name == "b"


def test_keys_are_hashed_and_sha256_entries_accepted(tmp_path: Path) -> None:
    (tmp_path / "alice").write_text("sk-alice\n")
    (tmp_path / "bob").write_text("sha256:" + hashlib.sha256(b"sk-bob").hexdigest())
    (tmp_path / "bad").write_text("sha256:nothex")
    (tmp_path / "..data").mkdir()  # Secret volume internals are skipped
    store = load_keys(tmp_path)
    assert store.lookup("sk-alice") == "alice" and store.lookup("sk-bob") == "bob"
    assert store.lookup("sk-eve") is None
    assert "sk-alice" not in repr(store.by_digest)  # only digests in memory
    assert any("bad" in e for e in store.errors)
    sig = keys_signature(tmp_path)
    (tmp_path / "carol").write_text("sk-carol")
    assert keys_signature(tmp_path) != sig


def test_authenticate_statuses(tmp_path: Path) -> None:
    (tmp_path / "alice").write_text("sk-alice")
    keys = load_keys(tmp_path)
    required = parse_policy({"request": {"auth": {"apiKeysSecretRef": {"name": "k"}}}})
    assert authenticate(required, keys, "Bearer sk-alice") == "alice"
    for header, code in (
        (None, "missing_api_key"),
        ("Bearer nope", "invalid_api_key"),
        ("Basic x", "missing_api_key"),
    ):
        with pytest.raises(GuardError) as exc:
            authenticate(required, keys, header)
        assert exc.value.status == 401 and exc.value.code == code
    open_ = parse_policy({"request": {}})
    assert authenticate(open_, keys, None) == "anonymous"
    assert authenticate(open_, keys, "Bearer sk-alice") == "alice"  # a valid key is still attributed
    assert bearer_token("bearer  tok ") == "tok"


def test_operator_rendered_documents_parse() -> None:
    """The builders' policy.json (with and without an LLMPolicy) is exactly what the guard reads."""
    from maestro.api.policy import LLMPolicySpec
    from maestro.builders import guard_config

    spec = LLMPolicySpec.model_validate({"request": FULL["request"], "audit": FULL["audit"]})
    doc = json.loads(guard_config.dumps(guard_config.render("prod", spec, "tiny")))
    p = parse_policy(doc)
    assert p.name == "prod" and p.digest.startswith("sha256:") and p.served_model_name == "tiny"
    assert p.auth_required and p.keys["alice"].tokens_per_minute == 900 and p.output_mode == "buffer"
    assert (p.pii_input, p.pii_output, p.max_output_tokens) == ("block", "redact", 50)
    open_ = parse_policy(json.loads(guard_config.dumps(guard_config.render(None, None, "tiny"))))
    assert not open_.auth_required and not open_.output_checks and open_.pii_input == "allow"


def test_access_resolves_each_keys_limits_and_models_once() -> None:
    """One `Access` per key: its own limits win, its model list narrows the policy's; others get defaults."""
    p = parse_policy(FULL)
    alice, other = p.access("alice"), p.access("eve")
    assert (alice.requests_per_minute, alice.tokens_per_minute) == (5, 900)
    assert (other.requests_per_minute, other.tokens_per_minute) == (60, 1000)
    assert other is p.access("anonymous") and alice.limited
    assert alice.lists("tiny") and not alice.lists("gpt-4") and not other.lists("gpt-4")
    with pytest.raises(GuardError) as exc:
        alice.check_model("alice", "gpt-4")
    assert (exc.value.status, exc.value.rule) == (403, "allowedModels")
    bob = {"id": "bob", "allowedModels": ["a"]}
    narrow = parse_policy({"request": {"auth": {"apiKeysSecretRef": {"name": "k"}, "keys": [bob]}}})
    narrow.access("carol").check_model("carol", "b")  # no policy list: any model
    with pytest.raises(GuardError) as exc:
        narrow.access("bob").check_model("bob", "b")
    assert exc.value.rule == "auth.keys.allowedModels"
    assert "Key 'bob' may not use model 'b'" in exc.value.message
    assert not narrow.access("carol").limited


def test_no_policy_is_the_rendered_pass_through() -> None:
    """No file and the operator's no-policy document mean the same rules (RequestPolicy.pass_through)."""
    from maestro.builders import guard_config

    rendered = parse_policy(json.loads(guard_config.dumps(guard_config.render(None, None, "tiny"))))
    for field in ("auth_required", "pii_input", "pii_output", "pii_entities", "blocked", "max_request_bytes"):
        assert getattr(rendered, field) == getattr(NO_POLICY, field), field
    assert not NO_POLICY.present and rendered.present and not NO_POLICY.output_checks


def test_unknown_top_level_fields_are_ignored_but_rules_stay_strict() -> None:
    """A guard one release behind hot-reloads what a newer operator renders; typos in rules still fail."""
    assert parse_policy({"request": {}, "renderedBy": "maestro 0.2"}).pii_input == "redact"
    with pytest.raises(PolicyError, match=r"request\.blockedTerm"):
        parse_policy({"request": {"blockedTerm": ["x"]}})
