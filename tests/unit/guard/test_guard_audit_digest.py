"""The keyed digest of prompts in audit lines: where its key comes from, and what compares."""

from __future__ import annotations

import hashlib
import hmac
import logging
from pathlib import Path

import pytest

from maestro.workers.guard import contract
from maestro.workers.guard.audit import PromptDigest, load_prompt_digest

pytestmark = pytest.mark.unit

KEY = "0123456789abcdef0123456789abcdef"


def test_the_key_comes_from_the_env_then_the_file(tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text("from-the-secret-file-32-bytes-xx\n")
    env = {contract.AUDIT_KEY_ENV: KEY, contract.AUDIT_KEY_FILE_ENV: str(key_file)}
    assert load_prompt_digest(env)("hi") == hmac.new(KEY.encode(), b"hi", hashlib.sha256).hexdigest()
    from_file = load_prompt_digest({contract.AUDIT_KEY_FILE_ENV: str(key_file)})
    assert from_file.source == str(key_file)
    assert from_file("hi") == hmac.new(b"from-the-secret-file-32-bytes-xx", b"hi", hashlib.sha256).hexdigest()
    # the same key (two replicas of one deployment, or a restart) gives the same digests and key id
    again = load_prompt_digest({contract.AUDIT_KEY_FILE_ENV: str(key_file)})
    assert again("hi") == from_file("hi") and again.key_id == from_file.key_id


def test_without_a_key_each_process_draws_its_own(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    missing = {contract.AUDIT_KEY_FILE_ENV: str(tmp_path / "absent")}
    with caplog.at_level(logging.INFO, logger="maestro.guard"):
        a = load_prompt_digest(missing)
    b = load_prompt_digest(missing)
    assert a.source == "random" and "only within this process" in caplog.text
    assert a("hi") != b("hi") and a.key_id != b.key_id  # only comparable within one process
    assert a("hi") != hashlib.sha256(b"hi").hexdigest() and a("hi") == a("hi")
    (tmp_path / "empty").write_text("  \n")
    assert load_prompt_digest({contract.AUDIT_KEY_FILE_ENV: str(tmp_path / "empty")}).source == "random"


def test_a_short_key_is_used_but_logged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="maestro.guard"):
        d = load_prompt_digest({contract.AUDIT_KEY_ENV: "short"})
    assert d("x") == hmac.new(b"short", b"x", hashlib.sha256).hexdigest() and "shorter than" in caplog.text
    with pytest.raises(ValueError):
        PromptDigest(b"")
