"""A bundle is untrusted data: names that lead out of it are refused before anything outside is opened, and a
malformed manifest of any shape is a BundleError naming the field, from every command that reads bundles."""

from __future__ import annotations

import argparse
import builtins
import hashlib
import json
import os
import shutil
import time
from pathlib import Path

import pytest

import distilrt
from distilrt.calib.sets import EvalConfig
from distilrt.errors import BundleError

OLD_QA = Path(__file__).parent / "data" / "bundles-0.1.0" / "distilbert-base-uncased-distilled-squad" / "fp32"
SECRET = b"outside the bundle: never read, hashed or copied\n"


def _inspect(path):
    from distilrt.cli.runtime_commands import inspect

    return inspect(argparse.Namespace(bundle=Path(path), json=False))


def _lint(path):
    from distilrt.export.engines.lint import lint_bundle

    return lint_bundle(path)


def _eval(path):
    from distilrt.export.evaluate import evaluate_bundle

    return evaluate_bundle(Path(path), EvalConfig(questions=20, masked_positions=20))


def _triton_repo(form):
    def write(path):
        from distilrt.serve.repository import ServingConfig, models_from_args, write_repository

        out = Path(path).parent / f"repo-{form}"
        return write_repository(models_from_args([str(path)]), out, ServingConfig(), form=form)
    return write


def _models_from_args(path):
    from distilrt.serve.repository import models_from_args

    return models_from_args([f"m={path}"])


def _rebuild(path):
    from distilrt.export.rebuild import rebuild

    return rebuild(Path(path), Path(path).parent / "rebuilt", progress=lambda message: None)


# The Python functions behind `distilrt run/inspect/lint/eval/triton-repo/rebuild` and serve's bundle reading.
READERS = {"load": distilrt.load, "read_bundle": distilrt.read_bundle, "inspect": _inspect, "lint": _lint,
           "eval": _eval, "triton-repo-python": _triton_repo("python"), "triton-repo-bls": _triton_repo("bls"),
           "models_from_args": _models_from_args}
CONFINED_READERS = {**READERS, "rebuild": _rebuild}


@pytest.fixture
def bundle(tmp_path):
    """A copy of a real (0.1.0) QA bundle to tamper with, and a secret file beside it."""
    copy = shutil.copytree(OLD_QA, tmp_path / "work" / "bundle")
    (tmp_path / "secret.txt").write_bytes(SECRET)
    return copy


def _edit(bundle: Path, change) -> None:
    manifest = json.loads((bundle / "manifest.json").read_text())
    change(manifest)
    (bundle / "manifest.json").write_text(json.dumps(manifest))


def _secret_hash() -> str:
    return hashlib.sha256(SECRET).hexdigest()


def _list_as_model(manifest, name, sha256):
    manifest["files"][name] = sha256
    manifest["model"]["file"] = name


ESCAPES = {
    "traversal in files": lambda m: m["files"].update({"../../secret.txt": _secret_hash()}),
    "traversal as model.file": lambda m: _list_as_model(m, "../../secret.txt", _secret_hash()),
    "traversal with a wrong hash": lambda m: m["files"].update({"../../secret.txt": "0" * 64}),
    "absolute model.file": lambda m: _list_as_model(m, "/etc/passwd", "0" * 64),
    "absolute tokenizer.file": lambda m: m["tokenizer"].update(file="/etc/hostname"),
    "absolute in files": lambda m: m["files"].update({"/etc/passwd": "0" * 64}),
    "traversal as fallback": lambda m: m.update(fallback={"file": "../secret.txt", "format": "onnx",
                                                          "backend": "onnxruntime"}),
}


@pytest.mark.parametrize("reader", CONFINED_READERS)
@pytest.mark.parametrize("escape", ESCAPES)
def test_a_name_leading_out_of_the_bundle_is_refused_before_anything_is_read(bundle, escape, reader, monkeypatch):
    _edit(bundle, ESCAPES[escape])
    opened = []
    real_open = os.open

    def watch(path, *args, **kwargs):
        opened.append(os.fspath(path))
        return real_open(path, *args, **kwargs)
    def watch_builtin(path, *args, **kwargs):
        opened.append(os.fspath(path) if isinstance(path, (str, os.PathLike)) else "")
        return real_builtin_open(path, *args, **kwargs)
    real_builtin_open = builtins.open
    monkeypatch.setattr(os, "open", watch)
    monkeypatch.setattr(builtins, "open", watch_builtin)
    with pytest.raises(BundleError, match="not a plain relative path|leads out of the bundle") as raised:
        CONFINED_READERS[reader](bundle)
    assert _secret_hash()[:8] not in str(raised.value)
    assert not [p for p in opened if p.endswith(("secret.txt", "passwd", "hostname"))]


@pytest.mark.parametrize("reader", CONFINED_READERS)
def test_a_symlink_out_of_the_bundle_is_refused_even_with_the_right_hash(bundle, reader):
    outside = bundle.parent.parent / "model.onnx"
    (bundle / "model.onnx").rename(outside)  # same bytes, same sha256: only where it is differs
    (bundle / "model.onnx").symlink_to(outside)
    with pytest.raises(BundleError, match=r"files\['model.onnx'\] 'model.onnx' leads out of the bundle"):
        CONFINED_READERS[reader](bundle)


def test_the_manifest_itself_may_not_be_a_link_out(bundle):
    outside = bundle.parent / "elsewhere.json"
    (bundle / "manifest.json").rename(outside)
    (bundle / "manifest.json").symlink_to(outside)
    with pytest.raises(BundleError, match="the manifest 'manifest.json' leads out of the bundle"):
        distilrt.read_bundle(bundle)


def test_a_symlink_inside_the_bundle_is_followed(bundle):
    (bundle / "models").mkdir()
    (bundle / "model.onnx").rename(bundle / "models" / "model.onnx")
    (bundle / "model.onnx").symlink_to(Path("models") / "model.onnx")
    assert distilrt.load(bundle)(question="Who wrote it?", context="Ada wrote it.")["answer"]


@pytest.mark.parametrize("kind", ["directory", "fifo"])
def test_a_name_that_is_not_a_regular_file_is_refused_without_opening_it(bundle, kind):
    (bundle / "tokenizer.json").unlink()
    if kind == "directory":
        (bundle / "tokenizer.json").mkdir()
    else:
        os.mkfifo(bundle / "tokenizer.json")  # opening it to hash it would block forever
    started = time.monotonic()
    with pytest.raises(BundleError, match=r"files\['tokenizer.json'\] 'tokenizer.json' is not a regular file"):
        distilrt.read_bundle(bundle)
    assert time.monotonic() - started < 5


def test_the_python_form_copies_only_listed_files_and_no_unlisted_link(bundle, tmp_path):
    pytest.importorskip("tritonclient.grpc", reason="triton-repo checks configs with tritonclient's schema (distilrt[serve])")
    from distilrt.serve.repository import ServingConfig, models_from_args, write_repository

    (bundle / "notes.txt").symlink_to(tmp_path / "secret.txt")  # not listed in the manifest
    write_repository(models_from_args([f"qa={bundle}"]), tmp_path / "repo", ServingConfig(), form="python")
    copied = tmp_path / "repo" / "qa" / "1" / "bundle"
    assert sorted(p.name for p in copied.iterdir()) == sorted(["manifest.json", *distilrt.read_bundle(bundle)
                                                                .manifest.files])
    assert not any(SECRET in p.read_bytes() for p in (tmp_path / "repo").rglob("*") if p.is_file())
    assert distilrt.read_bundle(copied).manifest == distilrt.read_bundle(bundle).manifest


# Manifest type confusion: each is a BundleError naming the field, from every reader.
MALFORMED = {
    "model_max_length a string": (
        lambda m: m["tokenizer"]["settings"].update(model_max_length="512"),
        "manifest.json: tokenizer.settings.model_max_length must be an integer, got '512'; "
        "rebuild it with `distilrt build`"),
    "sha256 an int": (lambda m: m["files"].update({"model.onnx": 12}),
                      "files['model.onnx'] must be a sha256 (64 lowercase hex digits), got 12"),
    "input without a name": (lambda m: m["model"]["inputs"][0].pop("name"), "model.inputs[0].name is missing"),
    "settings null": (lambda m: m["tokenizer"].update(settings=None),
                      "tokenizer.settings must be a JSON object, got None"),
    "schema_version true": (lambda m: m.update(schema_version=True), "manifest schema True"),
    "model a list": (lambda m: m.update(model=[1]), "model must be a JSON object, got [1]"),
    "unknown dtype": (lambda m: m["model"]["outputs"][0].update(dtype="complex"),
                      "model.outputs[0].dtype must be one of"),
    "negative token id": (lambda m: m["tokenizer"]["settings"].update(pad_token_id=-1),
                          "tokenizer.settings.pad_token_id must be an integer from 0"),
    "huge model_max_length": (lambda m: m["tokenizer"]["settings"].update(model_max_length=10**40),
                              "model_max_length must be an integer from 1 to 2147483647"),
    "shape profile out of order": (lambda m: m["shape_profile"].update(min_sequence=600),
                                   "shape_profile must have min_sequence <= opt_sequence <= max_sequence"),
    "random weights without a recipe": (lambda m: m["source"].update(stand_in=None),
                                        "source.random_weights is true but source.stand_in gives no recipe"),
}


@pytest.mark.parametrize("reader", READERS)
@pytest.mark.parametrize("case", MALFORMED)
def test_a_malformed_field_is_a_bundle_error_naming_it(bundle, case, reader):
    change, message = MALFORMED[case]
    _edit(bundle, change)
    with pytest.raises(BundleError) as raised:
        READERS[reader](bundle)
    assert message in str(raised.value)


@pytest.mark.parametrize("text, message", [
    ("[" * 200_000 + "]" * 200_000, "nests more than 32 levels deep"),
    ('{"a":' * 150_000 + "1" + "}" * 150_000, "nests more than 32 levels deep"),  # under the size bound
    ('{"pad": "' + "x" * (2 << 20) + '"}', "is larger than 1048576 bytes"),
    ('{"n": ' + "9" * 5000 + "}", "is not valid JSON"),  # more digits than Python converts to an int
    (b"\xff\xfe", "is not valid JSON"),
])
def test_a_manifest_too_deep_large_or_undecodable_is_refused_quickly(bundle, text, message):
    (bundle / "manifest.json").write_bytes(text if isinstance(text, bytes) else text.encode())
    started = time.monotonic()
    with pytest.raises(BundleError, match=message):
        distilrt.read_bundle(bundle)
    assert time.monotonic() - started < 2
