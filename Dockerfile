# ICA's container image: `ica serve` as a non-root user on a read-only root file system.
#
#   docker build -t ica .
#   docker run --read-only --tmpfs /tmp -v ica-data:/var/lib/ica -p 8000:8000 ica
#
# Only /var/lib/ica (ICA_DATA_DIR: the embedded SQLite file, the checkpoint copies, and the
# secret and ledger key files unless they come from a secret mount) is written; mount a
# volume there. With PostgreSQL, set ICA_DATABASE_URL (or put it in a secrets directory,
# ICA_SECRETS_DIR) and mount the keys: docs/operate.md. The pipeline client is part of the
# package: every replica serves the same zipapp (GET /api/v1/azdev/client/ica-<version>.pyz).
# tests/deploy/test_image.py runs hadolint on this file and runs its ENTRYPOINT, CMD and
# HEALTHCHECK commands against a scratch directory.

# The base is pinned to one Python release and Debian release; pin it by digest as well in
# the registry you build from (FROM python:...@sha256:...).
FROM python:3.11.14-slim-bookworm AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN python -m venv /opt/ica \
    && /opt/ica/bin/pip install --no-cache-dir . \
    && /opt/ica/bin/python -c "from azdev_ica import client_zipapp; client_zipapp.build()"

FROM python:3.11.14-slim-bookworm
LABEL org.opencontainers.image.title="ICA" \
      org.opencontainers.image.description="Deployment governance: run ledger, dual approval, tamper-evident audit" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 ica \
    && useradd --system --uid 10001 --gid ica --home-dir /var/lib/ica --no-create-home \
       --shell /usr/sbin/nologin ica \
    && install -d -o ica -g ica -m 0700 /var/lib/ica
COPY --from=build /opt/ica /opt/ica
ENV PATH="/opt/ica/bin:${PATH}" \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    ICA_DATA_DIR=/var/lib/ica
WORKDIR /var/lib/ica
USER 10001:10001
VOLUME ["/var/lib/ica"]
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["ica", "health", "--url", "http://127.0.0.1:8000"]
ENTRYPOINT ["ica"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
