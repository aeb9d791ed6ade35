# DUST's container image: `dust serve` by default; `dust worker`, `dust db upgrade` and every other command too.
# docker build -t dust .                         # the API, UI and job layer
# docker build -t dust --build-arg EXTRAS=models .   # with PyTorch for R-GCN models (about 1 GB more)
# Settings come from the environment at run time (DUST_DATABASE_URL, DUST_REDIS_URL, DUST_SECRET_KEY, ...):
# nothing secret is baked in. docs/deploy.md has the compose setup.

ARG PYTHON_IMAGE=python:3.12-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
# EXTRAS: optional dependency groups of pyproject.toml, comma-separated ("models": PyTorch, PyTorch Geometric).
ARG EXTRAS=""
# Where pip also looks; for "models", e.g. PyTorch's CPU-only index keeps the image from carrying CUDA.
ARG PIP_EXTRA_INDEX_URL=""
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_EXTRA_INDEX_URL=${PIP_EXTRA_INDEX_URL}
WORKDIR /src
RUN python -m venv /opt/dust
COPY pyproject.toml README.md ./
COPY dust ./dust
RUN /opt/dust/bin/pip install --no-cache-dir ".${EXTRAS:+[$EXTRAS]}"

FROM ${PYTHON_IMAGE} AS runtime
# A user of its own, without a login shell: the server needs to write nothing but its SQLite file (if any).
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/dust --create-home --shell /usr/sbin/nologin dust
COPY --from=builder /opt/dust /opt/dust
ENV PATH=/opt/dust/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    DUST_LOG_FORMAT=json \
    DUST_DATABASE_URL=sqlite:////var/lib/dust/dust.db
USER 10001:10001
WORKDIR /var/lib/dust
VOLUME ["/var/lib/dust"]
EXPOSE 8000
# Liveness only (/healthz): a database outage must not restart every replica; /readyz is for the balancer.
HEALTHCHECK --interval=15s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"]
ENTRYPOINT ["dust"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
