"""Stage configs validate themselves and round-trip through the manifest; tensor comparison reports the
smallest passing tolerance."""

from __future__ import annotations

import numpy as np
import pytest

from distilrt.errors import UserInputError, VerificationError
from distilrt.export.config import ExportConfig, ShapeProfile, Tolerances, VerifyConfig
from distilrt.export.verify import compare_outputs, verify_tensors


@pytest.mark.parametrize("config", [ExportConfig(), ShapeProfile(), Tolerances(), VerifyConfig(),
                                    Tolerances(atol={"": 1e-3, "logits": 5e-3})])
def test_configs_round_trip(config):
    import json

    assert type(config).from_dict(json.loads(json.dumps(config.to_dict()))) == config


@pytest.mark.parametrize("make, message", [
    (lambda: ExportConfig(opset=13), "opset must be 17"),
    (lambda: ExportConfig(attn_implementation="flash"), "attn_implementation"),
    (lambda: ExportConfig(trace_sequence=1), "at least 2"),
    (lambda: ShapeProfile(min_batch=4, opt_batch=2), "min_batch <= opt_batch"),
    (lambda: ShapeProfile(opt_sequence=600), "opt_sequence <= max_sequence"),
    (lambda: Tolerances(atol={"logits": 1e-3}), 'default under the key ""'),
    (lambda: Tolerances(rtol={"": -1.0}), ">= 0"),
    (lambda: VerifyConfig(shapes=((0, 8),)), "batch >= 1"),
    (lambda: VerifyConfig(task_samples=0), "at least 1"),
    (lambda: Tolerances.from_dict({"atol": {"": 1e-4}, "bogus": 1}), "no settings"),
])
def test_invalid_configs_name_the_problem(make, message):
    with pytest.raises(UserInputError, match=message):
        make()


def test_per_output_tolerance_falls_back_to_default():
    tolerances = Tolerances(atol={"": 1e-4, "logits": 1e-2})
    assert tolerances.for_output("logits") == (1e-2, 1e-5)
    assert tolerances.for_output("start_logits") == (1e-4, 1e-5)


def test_compare_reports_smallest_passing_tolerances():
    expected = np.array([1.0, -2.0, 10.0], dtype=np.float32)
    actual = np.array([1.0, -2.002, 10.05], dtype=np.float32)
    result = compare_outputs("x", actual, expected, atol=1e-3, rtol=0.0)
    assert not result.passed
    assert result.max_abs_diff == pytest.approx(0.05, rel=1e-4)
    assert result.min_passing_atol == pytest.approx(0.05, rel=1e-4)
    # with atol 1e-3 the worst element needs (0.05 - 0.001) / 10
    assert result.min_passing_rtol == pytest.approx(0.0049, rel=1e-3)
    assert compare_outputs("x", actual, expected, atol=result.min_passing_atol * 1.0001, rtol=0.0).passed


def test_verify_tensors_raises_with_the_result():
    feeds = {(1, 3): {"input_ids": np.zeros((1, 3), dtype=np.int64)}}
    source = lambda feed: {"logits": np.zeros((1, 3))}  # noqa: E731
    target = lambda feed: {"logits": np.array([[0.0, 0.2, 0.0]])}  # noqa: E731
    with pytest.raises(VerificationError, match="logits at batch 1 x seq 3") as caught:
        verify_tensors(source, target, feeds, ("logits",), Tolerances(), source_name="a", target_name="b")
    assert caught.value.result["worst"]["logits"]["max_abs_diff"] == pytest.approx(0.2)
    passing = verify_tensors(source, source, feeds, ("logits",), Tolerances(), source_name="a", target_name="a")
    assert passing and passing.worst()["logits"]["max_abs_diff"] == 0.0
