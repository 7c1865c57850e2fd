"""Triton model repositories for bundles: each model's config.pbtxt and files, written whole or not at all.

Two forms per bundle (docs/design.md#serving-and-transformers-5):
- ``python``: one Python-backend model that runs the whole bundle in-process (the bundle is copied into its
  version directory, or referenced where it is for `distilrt serve`);
- ``bls``: the model itself as a Triton model (``onnxruntime_onnx`` for ONNX bundles, ``tensorrt_plan`` for
  engines), and a Python-backend model that tokenizes and post-processes with the bundle's own head and runs
  the model through a BLS request. Clients send text to the Python model in both forms.

Configs are rendered from plain data and every one is parsed back with Triton's own schema (the generated
``model_config_pb2`` that tritonclient ships) before the repository is published.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from distilrt.bundle import Bundle, read_bundle
from distilrt.bundle_paths import member_path, open_member
from distilrt.config import StageConfig, check_int
from distilrt.errors import CapabilityError, UserInputError
from distilrt.files import replace_dir, staging_dir
from distilrt.manifest import ENGINE_FORMAT, MANIFEST_NAME
from distilrt.serve.protocol import OUTPUTS, TensorSpec, inputs_of

FORMS = ("python", "bls")
MODEL_TEMPLATE = Path(__file__).with_name("python_backend_model.py")
# Triton's config names for the bundle's tensor types (manifest model.inputs/outputs dtype).
_CONFIG_TYPES = {"int64": "TYPE_INT64", "int32": "TYPE_INT32", "float32": "TYPE_FP32", "float16": "TYPE_FP16"}


# What `distilrt serve` does for safety, and a repository given to one's own tritonserver must be told.
DEPLOYMENT_ADVICE = """\
# A Triton model repository written by `distilrt triton-repo`

Serve it with tritonserver --model-repository=THIS_DIRECTORY. Triton's defaults open every API on every
interface; `distilrt serve` does not, and neither should this server:

- Bind one interface: --http-address=127.0.0.1 --grpc-address=127.0.0.1 --metrics-address=127.0.0.1 (or the
  address a proxy in front of it uses).
- Restrict the APIs a text client never needs to requests carrying an admin key. System shared memory above
  all: a client can register the Python backend stub's own /dev/shm region as an output buffer and crash the
  server with its next request.

      --http-restricted-api=shared-memory,logging,trace,model-repository,model-config:distilrt-admin-key=KEY
      --grpc-restricted-protocol=shared-memory,logging,trace,model-repository,model-config:distilrt-admin-key=KEY

  with KEY a long random secret (python -c 'import secrets; print(secrets.token_urlsafe(24))'). Leave an API
  out of the list only to open it deliberately. Health, metadata, inference and statistics stay open.
- Watch the Python backend: when a stub process dies, Triton keeps answering ready while every request to
  that model fails with "Stub process is not healthy". Restart the server then (`distilrt serve` exits 1).
"""


@dataclass(frozen=True)
class ServingConfig(StageConfig):
    """How each served model is scheduled and run. Defaults are Triton's where it has one."""

    max_batch_size: int = 32  # requests per batch; the head runs them in one backend call when each is one window
    dynamic_batching: bool = True
    max_queue_delay_us: int = 0  # Triton's default: batch what is queued, never wait for more
    instances: int = 1  # model instances (processes of the Python backend)
    backend: str | None = None  # distilrt backend for the python form (default: the manifest's)
    threads: int | None = None  # ONNX Runtime intra-op threads per instance (default: one per physical core)
    # A context's windows each run the model: 64 KiB of text is ~40 windows of 384 tokens, seconds on a CPU.
    max_text_bytes: int = 65536

    def __post_init__(self):
        check_int("max_batch_size", self.max_batch_size, minimum=1)
        check_int("max_queue_delay_us", self.max_queue_delay_us, minimum=0)
        check_int("instances", self.instances, minimum=1)
        check_int("max_text_bytes", self.max_text_bytes, minimum=1)
        if self.threads is not None:
            check_int("threads", self.threads, minimum=1)


class Symbol(str):
    """An enum value in a config (KIND_CPU, TYPE_STRING): written bare, not quoted."""


def model_name(bundle: Bundle) -> str:
    """The default Triton model name of a bundle: <checkpoint>-<variant>, in characters safe for a path and URL."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{bundle.manifest.source.name}-{bundle.variant}").strip("-.")


def python_model_config(name: str, bundle: Bundle, config: ServingConfig, *, form: str, bundle_ref: str,
                        model: str | None = None, model_max_batch_size: int | None = None) -> dict:
    """The Python-backend model that clients send text to (form ``python`` or ``bls``)."""
    parameters = {"form": "bundle" if form == "python" else "bls", "bundle": bundle_ref,
                  "max_text_bytes": str(config.max_text_bytes)}
    if form == "python":
        parameters.update({"backend": config.backend or "", "threads": str(config.threads or "")})
    else:
        parameters.update({"model": model, "model_max_batch_size": str(model_max_batch_size)})
    return {
        "name": name,
        "backend": "python",
        "max_batch_size": config.max_batch_size,
        "input": [_tensor(spec) for spec in inputs_of(bundle.task)],
        "output": [_tensor(spec) for spec in OUTPUTS],
        **_scheduling(config, "KIND_CPU"),
        "parameters": [{"key": key, "value": {"string_value": value}} for key, value in parameters.items()],
    }


def model_config(name: str, bundle: Bundle, config: ServingConfig, *, kind: str | None = None) -> dict:
    """The bundle's model as a Triton model: onnxruntime_onnx, or tensorrt_plan for an engine bundle.

    The shape profile gives max_batch_size (an engine refuses larger batches); the sequence axis is -1, within
    the profile by the head's max_seq_len. Dynamic batching concatenates requests of one sequence length.
    """
    engine = bundle.manifest.model_file.format == ENGINE_FORMAT
    profile = bundle.manifest.shape_profile or {}
    max_batch = int(profile.get("max_batch", config.max_batch_size))
    return {
        "name": name,
        "platform": "tensorrt_plan" if engine else "onnxruntime_onnx",
        "max_batch_size": max_batch,
        "input": [_model_tensor(record) for record in bundle.manifest.model["inputs"]],
        "output": [_model_tensor(record) for record in bundle.manifest.model["outputs"]],
        **_scheduling(config, kind or ("KIND_GPU" if engine else "KIND_CPU")),
    }


def _scheduling(config: ServingConfig, kind: str) -> dict:
    batching = {"dynamic_batching": {"max_queue_delay_microseconds": config.max_queue_delay_us}} \
        if config.dynamic_batching else {}
    return {**batching, "instance_group": [{"kind": Symbol(kind), "count": config.instances}]}


def _tensor(spec: TensorSpec) -> dict:
    return {"name": spec.name, "data_type": Symbol(spec.data_type), "dims": list(spec.dims),
            **({"optional": True} if spec.optional else {})}


def _model_tensor(record) -> dict:
    """A manifest input/output (shape [batch, sequence(, vocab)]) without its batch axis."""
    dims = [dim if isinstance(dim, int) else -1 for dim in record["shape"][1:]]
    return {"name": record["name"], "data_type": Symbol(_CONFIG_TYPES[record["dtype"]]), "dims": dims}


def to_pbtxt(config: dict, indent: str = "") -> str:
    """Protobuf text format of a config dict: nested dicts are messages, lists are repeated fields."""
    lines = []
    for key, value in config.items():
        if isinstance(value, dict):
            lines.append(f"{indent}{key} {{\n{to_pbtxt(value, indent + '  ')}{indent}}}")
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            items = ",\n".join(f"{indent}  {{\n{to_pbtxt(item, indent + '    ')}{indent}  }}" for item in value)
            lines.append(f"{indent}{key} [\n{items}\n{indent}]")
        elif isinstance(value, list):
            lines.append(f"{indent}{key}: [ {', '.join(_scalar(v) for v in value)} ]")
        else:
            lines.append(f"{indent}{key}: {_scalar(value)}")
    return "".join(line + "\n" for line in lines)


def _scalar(value) -> str:
    if isinstance(value, Symbol):
        return str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def validate_pbtxt(text: str, where: str = "config.pbtxt"):
    """Parse a config with Triton's ModelConfig schema; the parsed message, or UserInputError saying what is wrong."""
    try:
        from google.protobuf import text_format
        from tritonclient.grpc import model_config_pb2
    except ImportError as e:
        raise CapabilityError(f"checking Triton model configs needs tritonclient's schema ({e}): "
                              'pip install "distilrt[serve]"') from e
    try:
        return text_format.Parse(text, model_config_pb2.ModelConfig())
    except text_format.ParseError as e:
        raise UserInputError(f"{where} does not follow Triton's model configuration schema: {e}") from e


def find_bundles(paths: list[Path]) -> list[Bundle]:
    """Bundles at the given paths: a bundle directory, or any directory holding bundles (artifacts/<checkpoint>)."""
    bundles = []
    for path in paths:
        if (Path(path) / MANIFEST_NAME).is_file():
            bundles.append(read_bundle(path))
            continue
        found = sorted(manifest.parent for manifest in Path(path).rglob(MANIFEST_NAME)) if Path(path).is_dir() else []
        found = [p for p in found if not any(part.startswith(".") for part in p.relative_to(path).parts)]
        if not found:
            raise UserInputError(f"{path} is not a bundle and holds none; pass bundle directories or artifacts/<checkpoint>")
        bundles.extend(read_bundle(p) for p in found)
    return bundles


def named_bundles(bundles: list[Bundle], names: list[str | None] | None = None) -> list[tuple[str, Bundle]]:
    """(model name, bundle) pairs; two bundles may not share a name."""
    names = names or [None] * len(bundles)
    pairs = [(name or model_name(bundle), bundle) for name, bundle in zip(names, bundles)]
    seen: dict[str, Path] = {}
    for name, bundle in pairs:
        if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", name):
            raise UserInputError(f"model name {name!r} must be letters, digits, '_', '.' or '-'; name it NAME=PATH")
        if name in seen:
            raise UserInputError(f"{seen[name]} and {bundle.path} would both be model {name!r}; name one NAME=PATH")
        seen[name] = bundle.path
    return pairs


def models_from_args(values: list[str]) -> list[tuple[str, Bundle]]:
    """(model name, bundle) for command-line arguments: BUNDLE, a directory of bundles, or NAME=BUNDLE."""
    bundles, names = [], []
    for value in values:
        name, sep, path = value.partition("=")
        if sep and not Path(value).exists():
            if not name:
                raise UserInputError(f"{value!r}: give NAME=BUNDLE with a name, or the bundle path alone")
            bundles.append(read_bundle(path))
            names.append(name)
        else:
            found = find_bundles([Path(value)])
            bundles.extend(found)
            names.extend([None] * len(found))
    return named_bundles(bundles, names)


def write_repository(models: list[tuple[str, Bundle]], out: Path, config: ServingConfig, *, form: str = "bls",
                     copy_bundles: bool = True) -> list[Path]:
    """Write a Triton model repository at ``out`` (replacing one there); the config.pbtxt paths written.

    ``copy_bundles=False`` (python form only) references each bundle where it is instead of copying it.
    """
    if form not in FORMS:
        raise UserInputError(f"repository form {form!r} is not one of {list(FORMS)}")
    if form == "bls" and not copy_bundles:
        raise UserInputError("the bls form needs its files in the repository; copy the bundles")
    out = Path(out)
    with staging_dir(out) as staging:
        written = []
        for name, bundle in models:
            if form == "python":
                written.append(_write_python_form(staging, name, bundle, config, copy_bundles))
            else:
                written.extend(_write_bls_form(staging, name, bundle, config))
        for path in written:
            validate_pbtxt(path.read_text(encoding="utf-8"), str(path.relative_to(staging)))
        if copy_bundles:  # a repository to deploy (`distilrt triton-repo`), not serve's own temporary one
            (staging / "README.md").write_text(DEPLOYMENT_ADVICE, encoding="utf-8")
        replace_dir(staging, out)
    return [out / path.relative_to(staging) for path in written]


def _write_python_form(repo: Path, name: str, bundle: Bundle, config: ServingConfig, copy_bundle: bool) -> Path:
    version = _version_dir(repo, name)
    if copy_bundle:
        copy_bundle_files(bundle, version / "bundle")
    else:  # a link, so that the model's config (which clients may read) does not show where the bundle lives
        (version / "bundle").symlink_to(Path(bundle.path).resolve(), target_is_directory=True)
    return _write_config(repo, name, python_model_config(name, bundle, config, form="python", bundle_ref="bundle"))


def copy_bundle_files(bundle: Bundle, target: Path) -> None:
    """Copy manifest.json and the files it lists, and nothing else (no unlisted file or link is followed)."""
    for name in (MANIFEST_NAME, *bundle.manifest.files):
        _copy_member(bundle, name, target / name)


def _copy_member(bundle: Bundle, name: str, target: Path) -> None:
    """One file of the bundle, through ``member_path``: a name or symlink leading out of the bundle, or one that
    is not a regular file, is a BundleError instead of its target being copied into the repository."""
    field = "the manifest" if name == MANIFEST_NAME else f"files[{name!r}]"
    source = member_path(bundle.path, name, field, str(bundle.path / MANIFEST_NAME))
    target.parent.mkdir(parents=True, exist_ok=True)
    with open_member(source) as f, open(target, "xb") as out:
        shutil.copyfileobj(f, out)


def _write_bls_form(repo: Path, name: str, bundle: Bundle, config: ServingConfig) -> list[Path]:
    inner = f"{name}_model"
    engine = bundle.manifest.model_file.format == ENGINE_FORMAT
    target = "model.plan" if engine else "model.onnx"  # Triton's default file names for the two platforms
    _copy_member(bundle, bundle.manifest.model_file.file, _version_dir(repo, inner, python=False) / target)
    inner_config = model_config(inner, bundle, config)
    version = _version_dir(repo, name)
    for file in (MANIFEST_NAME, bundle.manifest.tokenizer_file):
        _copy_member(bundle, file, version / "bundle" / file)
    outer = python_model_config(name, bundle, config, form="bls", bundle_ref="bundle", model=inner,
                                model_max_batch_size=inner_config["max_batch_size"])
    return [_write_config(repo, inner, inner_config), _write_config(repo, name, outer)]


def _version_dir(repo: Path, name: str, *, python: bool = True) -> Path:
    version = repo / name / "1"
    version.mkdir(parents=True)
    if python:
        shutil.copyfile(MODEL_TEMPLATE, version / "model.py")
    return version


def _write_config(repo: Path, name: str, config: dict) -> Path:
    path = repo / name / "config.pbtxt"
    path.write_text(to_pbtxt(config), encoding="utf-8")
    return path
