# NVIDIA's Triton Inference Server image with distilrt in its Python, for the model repositories that
# `distilrt triton-repo` writes (README: "Clusters: a model repository for the tritonserver container").
# distilrt is not on a package index: build its wheel first, then build this image with dist/ as the context:
#
#   pip wheel --no-deps -w dist .
#   docker build -f ci/tritonserver.Dockerfile -t my-tritonserver dist/
#   docker run --rm -p 8000:8000 -p 8001:8001 -p 8002:8002 -v $PWD/model_repository:/models my-tritonserver \
#       tritonserver --model-repository=/models
#
# TRITON_RELEASE: a tritonserver release (<yy.mm>); engine bundles (tensorrt_plan) must be built with the
# TensorRT of the release they run on. DISTILRT_EXTRAS: `ort` for the python form (the whole bundle runs in
# the Python backend); the bls form needs only the runtime's numpy and tokenizers (pass DISTILRT_EXTRAS="").
# Not built in this project's CI (no Docker, no access to nvcr.io there).
ARG TRITON_RELEASE=25.01
FROM nvcr.io/nvidia/tritonserver:${TRITON_RELEASE}-py3
ARG DISTILRT_EXTRAS=ort
# Newer images mark their Python as externally managed (PEP 668); this image is built for that Python.
ENV PIP_BREAK_SYSTEM_PACKAGES=1
COPY distilrt-*.whl /tmp/wheels/
RUN set -eu; wheel="$(ls /tmp/wheels/distilrt-*.whl)"; \
    pip install --no-cache-dir "${wheel}${DISTILRT_EXTRAS:+[${DISTILRT_EXTRAS}]}"; \
    rm -rf /tmp/wheels; \
    python3 -c "import distilrt; print('distilrt', distilrt.__version__)"
