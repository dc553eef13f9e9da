# The TwinRay image: every workload of the Helm chart (deploy/helm/twinray) runs it — the RayService's
# head and workers, each training RayJob's cluster and its submitter. Ray 2.60 on Python 3.11, as pinned
# in pyproject.toml; the project goes in as one wheel, so its dependencies are exactly pyproject's.
#
#   docker build -t twinray:0.1.0 .                                         # CPU
#   docker build --build-arg RAY_IMAGE=rayproject/ray:2.60.0-py311-gpu -t twinray:0.1.0-gpu .
#
# No Docker engine exists on the development machines, so this file is never built there: the chart tests
# (tests/unit/deploy/test_dockerfile.py) parse it and check its install steps against pyproject.toml.
ARG RAY_IMAGE=rayproject/ray:2.60.0-py311

# Builder: generate the protobuf code with the grpcio-tools pinned in pyproject.toml (the same command as the
# Makefile's protoc rule), then build the project's wheel with those generated modules inside.
FROM ${RAY_IMAGE} AS builder
# Made by the image's user, ray, so the wheel build may write beside the sources.
RUN mkdir -p /home/ray/src
WORKDIR /home/ray/src
COPY --chown=ray:users . .
RUN GRPC_TOOLS="$(python -c 'import tomllib; print(next(d for d in tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"] if d.startswith("grpcio-tools")))')" \
    && python -m pip install --no-cache-dir "${GRPC_TOOLS}" \
    && python -m grpc_tools.protoc -Iprotos --python_out=protos --pyi_out=protos --grpc_python_out=protos protos/twinray/v1/*.proto \
    && python -m pip wheel --no-cache-dir --no-deps --wheel-dir /home/ray/wheels .

# Runtime: the Ray image plus the wheel; pip resolves the dependencies from the wheel's metadata (pyproject.toml).
FROM ${RAY_IMAGE}
COPY --from=builder --chown=ray:users /home/ray/wheels /tmp/wheels
RUN python -m pip install --no-cache-dir /tmp/wheels/twinray-*.whl \
    && rm -rf /tmp/wheels \
    && python -c "import twinray.v1.common_pb2_grpc" \
    && twinray --help > /dev/null
ENV RAY_USAGE_STATS_ENABLED=0 \
    TWINRAY_HOME=/home/ray/.twinray
WORKDIR /home/ray
USER ray
