"""Property test: real manifests of tiny built bundles, mutated at random (keys deleted, types changed, huge and
negative ints, null, nested values, path traversal strings), make the bundle readers raise only DistilrtError
subclasses (or succeed): `distilrt.load`, lint, eval, inspect, triton-repo and serve's bundle reading."""

from __future__ import annotations

import copy
import json
import shutil

import pytest

hypothesis = pytest.importorskip("hypothesis", reason="the property test needs hypothesis (the test extra)")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from test_bundle_safety import OLD_QA, READERS  # noqa: E402

from distilrt.errors import DistilrtError  # noqa: E402

TRAVERSALS = ["../../../../etc/passwd", "/etc/passwd", "..", ".", "./model.onnx", "model.onnx/", "a\x00b", "",
              "../bundle/model.onnx", "tokenizer.json/../../x"]
LEAVES = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-2**70, max_value=2**70),
    st.sampled_from([0, -1, 2**31, 2**63, 10**30]), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12), st.sampled_from(TRAVERSALS), st.just("0" * 64))
VALUES = st.recursive(LEAVES, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=12)


def _paths(node, prefix=()):
    """Every place in a JSON tree: key paths to each value."""
    yield prefix
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, value in items:
        yield from _paths(value, (*prefix, key))


def _mutate(manifest, path, operation, value):
    if not path:
        return value if operation == "replace" else manifest
    parent = manifest
    for key in path[:-1]:
        parent = parent[key]
    key = path[-1]
    if operation == "delete":
        del parent[key]
    elif operation == "replace":
        parent[key] = value
    elif operation == "rename" and isinstance(parent, dict):
        parent[value if isinstance(value, str) else str(value)] = parent.pop(key)
    elif operation == "nest":
        parent[key] = [[[parent[key]]]]
    return manifest


@pytest.fixture(scope="module")
def originals(tmp_path_factory):
    """Two real bundles: the 0.1.0 QA bundle, and a tiny fill-mask one built now (the way tests/conftest.py does)."""
    from conftest import MLM_NAME

    from distilrt.export.build import BuildOptions, build_fp32
    from distilrt.export.random_checkpoint import make_random_checkpoint

    root = tmp_path_factory.mktemp("fuzz")
    checkpoint = make_random_checkpoint(MLM_NAME, root / "checkpoints" / MLM_NAME, tiny=True)
    mlm = build_fp32(str(checkpoint), BuildOptions(out_dir=root / "artifacts"), progress=lambda message: None)
    return [OLD_QA, mlm.path]


MUTATIONS = st.lists(st.tuples(st.integers(min_value=0), st.sampled_from(["delete", "replace", "rename", "nest"]),
                               VALUES), min_size=1, max_size=3)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(which=st.integers(min_value=0, max_value=1), mutations=MUTATIONS)
def test_only_distilrt_errors_escape_the_bundle_readers(originals, tmp_path_factory, which, mutations):
    original = originals[which]
    work = tmp_path_factory.mktemp("mutant")
    bundle = shutil.copytree(original, work / "bundle")
    manifest = json.loads((original / "manifest.json").read_text())
    mutant = copy.deepcopy(manifest)
    for index, operation, value in mutations:
        paths = list(_paths(mutant))
        mutant = _mutate(mutant, paths[index % len(paths)], operation, value)
    (bundle / "manifest.json").write_text(json.dumps(mutant))
    for name, reader in READERS.items():
        try:
            reader(bundle)
        except DistilrtError:
            pass
        except Exception as e:  # anything else is a bug: the mutation and the reader say how to reproduce it
            raise AssertionError(f"{name} raised {type(e).__name__}: {e} for {mutations!r}") from e
    shutil.rmtree(work, ignore_errors=True)
