"""distilrt.serve: bundles behind NVIDIA Triton Inference Server, text in and the pipelines' answers out.

    protocol.py      the tensors a served model takes and gives; request decoding and checks; answers as JSON
    batching.py      a dynamic batch of requests through one task head call, errors kept per request
    python_model.py  what runs inside Triton's Python backend (the model.py template only bridges to it)
    repository.py    Triton model repositories: config.pbtxt, the Python-backend and BLS + ONNX/TensorRT forms
    environment.py   pytriton's bundled tritonserver: its files, and the libpython its Python backend needs
    server.py        `distilrt serve`: a repository of the given bundles on a tritonserver process
    client.py        a thin client over tritonclient: text in, the answers' dicts out

Imports the runtime only (docs/design.md#layout-and-import-rules); tritonclient and pytriton are imported
inside the functions that need them, so `import distilrt` and `import distilrt.serve` stay lean.
"""
