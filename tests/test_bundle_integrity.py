"""Loading checks the bundle: schema, missing files, altered files, each a clear BundleError."""

from __future__ import annotations

import json
import shutil

import pytest

import distilrt
from distilrt.errors import BundleError


@pytest.fixture
def bundle_copy(tiny_bundles, tmp_path):
    copy = tmp_path / "bundle"
    shutil.copytree(tiny_bundles["distilbert-base-uncased-distilled-squad"].bundle, copy)
    return copy


def test_intact_copy_loads(bundle_copy):
    qa = distilrt.load(bundle_copy)
    assert isinstance(qa(question="Who?", context="Ada wrote it.")["answer"], str)


@pytest.mark.parametrize("name", ["model.onnx", "tokenizer.json", "report.json"])
def test_missing_file(bundle_copy, name):
    (bundle_copy / name).unlink()
    with pytest.raises(BundleError, match=f"is missing {name}"):
        distilrt.load(bundle_copy)


@pytest.mark.parametrize("name", ["model.onnx", "tokenizer.json"])
def test_altered_file(bundle_copy, name):
    with open(bundle_copy / name, "ab") as f:
        f.write(b" ")
    with pytest.raises(BundleError, match=f"{name} was altered after the bundle was built"):
        distilrt.load(bundle_copy)


def test_missing_manifest(bundle_copy):
    (bundle_copy / "manifest.json").unlink()
    with pytest.raises(BundleError, match="manifest.json is missing"):
        distilrt.load(bundle_copy)


def test_other_schema_version(bundle_copy):
    manifest = json.loads((bundle_copy / "manifest.json").read_text())
    manifest["schema_version"] = 99
    (bundle_copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="schema 99 but this distilrt reads schema 1"):
        distilrt.load(bundle_copy)


def test_corrupt_manifest(bundle_copy):
    (bundle_copy / "manifest.json").write_text("{not json")
    with pytest.raises(BundleError, match="is not valid JSON"):
        distilrt.load(bundle_copy)


def test_not_a_directory(tmp_path):
    with pytest.raises(BundleError, match="does not exist"):
        distilrt.load(tmp_path / "nowhere")
