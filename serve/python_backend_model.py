"""Triton Python-backend model for a distilrt bundle (written into the repository as model.py).

It only hands Triton's requests to distilrt.serve.python_model.ServedModel, so the same tested code answers
in `distilrt serve` and in a repository made by `distilrt triton-repo`. The Python that runs it needs
distilrt installed with its backend (pip install "distilrt[ort]").
"""

import json
from pathlib import Path

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        from distilrt.serve.python_model import ServedModel

        version_dir = Path(args["model_repository"]) / args["model_version"]
        self._model = ServedModel(json.loads(args["model_config"]), version_dir, pb_utils)

    def execute(self, requests):
        return self._model.execute(requests)

    def finalize(self):
        self._model.close()
