"""Rebuild a bundle from its manifest alone: same source, same stage configs."""

from __future__ import annotations

import tempfile
from pathlib import Path

from distilrt.bundle import read_bundle
from distilrt.export.build import BuildOptions, BuildResult, Progress, build_fp32, print_progress
from distilrt.export.config import ExportConfig, ShapeProfile, Tolerances, VerifyConfig
from distilrt.export.random_checkpoint import make_random_checkpoint


def options_from_manifest(manifest: dict, out_dir: Path) -> BuildOptions:
    stages = manifest["stages"]
    return BuildOptions(
        task=manifest["task"],
        revision=manifest["source"].get("revision"),
        out_dir=out_dir,
        export=ExportConfig.from_dict(stages["export"]),
        verify=VerifyConfig.from_dict(stages["verify"]),
        tolerances=Tolerances.from_dict(stages["tolerances"]),
        shape_profile=ShapeProfile.from_dict(manifest["shape_profile"]),
    )


def rebuild(bundle_path: Path, out_dir: Path, progress: Progress = print_progress) -> BuildResult:
    manifest = read_bundle(bundle_path).manifest
    options = options_from_manifest(manifest, out_dir)
    stand_in = manifest["source"].get("stand_in")
    if stand_in is None:
        return build_fp32(manifest["source"]["id"], options, progress)
    # A RANDOM-weight stand-in is made again from its recipe, under the same directory name.
    with tempfile.TemporaryDirectory(prefix="distilrt-rebuild-") as scratch:
        name = Path(manifest["source"]["id"]).name
        directory = make_random_checkpoint(
            stand_in["checkpoint"], Path(scratch) / name, tiny=stand_in["tiny"], seed=stand_in["seed"],
            head_scale=stand_in["head_scale"],
        )
        return build_fp32(str(directory), options, progress)
