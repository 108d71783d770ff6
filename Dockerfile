# syntax=docker/dockerfile:1
# synthgap image: the CLI, the Kubeflow pipeline steps (kfp), TensorBoard, JupyterLab and the notebooks.
#
#   docker build -t synthgap/synthgap:0.1.0 .                                   # CPU torch (~1 GB smaller)
#   docker build --build-arg TORCH_INDEX_URL=https://pypi.org/simple -t synthgap/synthgap:0.1.0-cuda .
#                                                                                # CUDA torch from PyPI
# BASE_IMAGE must provide python3 (>= 3.10) with the venv module; both stages use it, because the
# virtual environment is copied from the build stage and links to the base image's interpreter.
# PyPI's Linux torch wheels carry their own CUDA runtime, so a CUDA build only needs TORCH_INDEX_URL
# (the node supplies the NVIDIA driver); a CUDA base image (e.g. one built FROM nvidia/cuda with
# Python 3.11) also works through BASE_IMAGE. See docs/pipelines.md.
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS build
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH
RUN python3 -m venv /opt/venv
WORKDIR /src
# torch first, in its own layer: it is the big one and changes least.
RUN pip install --no-cache-dir --index-url "${TORCH_INDEX_URL}" --extra-index-url https://pypi.org/simple \
        "torch==2.14.1" "torchvision==0.29.1"
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install --no-cache-dir "./[pipelines,gcs,s3]" "jupyterlab==4.6.6"
# Notebooks are optional: the build context (see .dockerignore) may have none yet.
COPY . /context
RUN mkdir -p /context/notebooks

FROM ${BASE_IMAGE}
LABEL org.opencontainers.image.title="synthgap" \
      org.opencontainers.image.ref.name="synthgap/synthgap:0.1.0" \
      org.opencontainers.image.description="synthgap CLI, Kubeflow pipeline steps, TensorBoard and JupyterLab" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
# Non-root user; /data is where the pipelines mount their dataset volume.
RUN useradd --create-home --uid 1000 --shell /bin/bash synthgap \
    && mkdir -p /data \
    && chown synthgap:synthgap /data
COPY --from=build /opt/venv /opt/venv
COPY --from=build --chown=synthgap:synthgap /context/notebooks /home/synthgap/notebooks
# Numeric, so Kubernetes runAsNonRoot can verify it.
USER 1000:1000
WORKDIR /home/synthgap
# JupyterLab by default; `docker run IMAGE synthgap ...` or `... tensorboard --logdir ...` for the rest.
EXPOSE 8888 6006
CMD ["jupyter", "lab", "--ip=0.0.0.0", "--port=8888", "--no-browser", "--notebook-dir=/home/synthgap/notebooks"]
