"""`distilrt serve` and `distilrt triton-repo`: bundles behind NVIDIA Triton Inference Server (distilrt[serve])."""

from __future__ import annotations

import argparse
from pathlib import Path

from distilrt.config import default_of
from distilrt.serve.repository import FORMS, ServingConfig


def _add_serving_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--max-batch-size", type=int, default=default_of(ServingConfig, "max_batch_size"),
                        help="requests per batch (default %(default)s)")
    parser.add_argument("--max-queue-delay-us", type=int, default=default_of(ServingConfig, "max_queue_delay_us"),
                        help="how long the dynamic batcher may hold a request to fill a batch (default %(default)s)")
    parser.add_argument("--no-dynamic-batching", dest="dynamic_batching", action="store_false",
                        help="run requests one at a time")
    parser.add_argument("--instances", type=int, default=default_of(ServingConfig, "instances"),
                        help="model instances per bundle (default %(default)s)")
    parser.add_argument("--max-text-bytes", type=int, default=default_of(ServingConfig, "max_text_bytes"),
                        help="refuse a question, context or text longer than this (default %(default)s)")


def _config(args, **extra) -> ServingConfig:
    return ServingConfig(max_batch_size=args.max_batch_size, dynamic_batching=args.dynamic_batching,
                         max_queue_delay_us=args.max_queue_delay_us, instances=args.instances,
                         max_text_bytes=args.max_text_bytes, **extra)


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    from distilrt.backends import supported_backends
    from distilrt.serve.server import Ports

    parser.add_argument("bundles", nargs="+", metavar="BUNDLE",
                        help="bundle directory, a directory of bundles (artifacts/<checkpoint>), or NAME=BUNDLE to name "
                             "its model (default name: <checkpoint>-<variant>)")
    from distilrt.serve.access import ADMIN_HEADER, MIN_KEY_LENGTH, RESTRICTED_APIS

    parser.add_argument("--host", default="127.0.0.1",
                        help="the address HTTP, gRPC and metrics listen on (default %(default)s, this machine only; "
                             "0.0.0.0 for every interface)")
    parser.add_argument("--http-port", type=int, default=Ports.http, help="default %(default)s")
    parser.add_argument("--grpc-port", type=int, default=Ports.grpc, help="default %(default)s")
    parser.add_argument("--metrics-port", type=int, default=Ports.metrics, help="default %(default)s")
    _add_serving_arguments(parser)
    parser.add_argument("--backend", help=f"{', '.join(supported_backends())} (default: the backend each manifest "
                                          "names)")
    parser.add_argument("--threads", type=int, help="ONNX Runtime intra-op threads per instance (default: one per physical core)")
    parser.add_argument("--exit-timeout", type=int, default=30,
                        help="on SIGTERM, seconds to finish requests in flight (default %(default)s)")
    parser.add_argument("--admin-key", metavar="KEY",
                        help=f"the value of header {ADMIN_HEADER} that opens the restricted APIs "
                             f"({', '.join(RESTRICTED_APIS)}); at least {MIN_KEY_LENGTH} characters (default: a "
                             "random secret per start, so that nobody can call them)")
    parser.add_argument("--open-api", action="append", default=[], choices=RESTRICTED_APIS, metavar="API",
                        help=f"open a restricted API to every client, deliberately (repeatable): one of "
                             f"{', '.join(RESTRICTED_APIS)}")
    log = parser.add_mutually_exclusive_group()
    log.add_argument("--log-file", type=Path, help="Triton's log (mode 0600; default: a new distilrt-serve-*.log in "
                                                   "the temporary directory)")
    log.add_argument("--verbose", action="store_true", help="Triton's log on the console instead of a file")


def serve(args) -> int:
    from distilrt.serve.access import Access, random_key
    from distilrt.serve.server import Ports, serve

    config = _config(args, backend=args.backend, threads=args.threads)
    access = Access(host=args.host, admin_key=args.admin_key or random_key(), open_apis=tuple(args.open_api))
    return serve(args.bundles, config, Ports(args.http_port, args.grpc_port, args.metrics_port), access=access,
                 log_file=args.log_file, verbose=args.verbose, exit_timeout_s=args.exit_timeout)


def add_triton_repo_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("artifacts", nargs="+", metavar="ARTIFACTS",
                        help="bundle directories, directories of bundles (artifacts/ or artifacts/<checkpoint>), or "
                             "NAME=BUNDLE")
    parser.add_argument("--out", type=Path, required=True, metavar="REPO", help="the repository to write (replaced)")
    parser.add_argument("--form", choices=FORMS, default="bls",
                        help="bls: the model on Triton's onnxruntime/tensorrt backend, text in and out through a "
                             "Python-backend model with distilrt's heads; python: the whole bundle in one "
                             "Python-backend model (default %(default)s)")
    _add_serving_arguments(parser)


def triton_repo(args) -> int:
    from distilrt.serve.repository import models_from_args, write_repository

    models = models_from_args(args.artifacts)
    for path in write_repository(models, args.out, _config(args), form=args.form):
        print(f"{path} (checked against Triton's model configuration schema)")
    return 0


COMMANDS = {"serve": (add_serve_arguments, serve), "triton-repo": (add_triton_repo_arguments, triton_repo)}
