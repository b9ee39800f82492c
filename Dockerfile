# The production image: one image for `threadchat worker` (the default) and `threadchat bot`.
#
#   docker build -t threadchat .                      # on python:3.12-slim-bookworm
#   docker build --build-arg BASE_IMAGE=registry.example.com/python:3.12 -t threadchat .
#
# BASE_IMAGE is any image with python3 (3.11+, with the venv module) and CA certificates; a
# registry mirror's or your own. Dependencies are exactly requirements.lock (./devtools/lock
# regenerates it). The final stage has no pip, no compilers, no devtools/ and no Temporal CLI.
ARG BASE_IMAGE=python:3.12-slim-bookworm

FROM ${BASE_IMAGE} AS build
WORKDIR /src
RUN python3 -m venv /opt/threadchat
COPY requirements.lock ./
# --only-binary: never compile a dependency here, so the stage needs no build tools either.
RUN /opt/threadchat/bin/pip install --no-cache-dir --disable-pip-version-check \
        --only-binary=:all: --no-deps -r requirements.lock
COPY pyproject.toml README.md ./
COPY threadchat ./threadchat
COPY bot ./bot
COPY workflows ./workflows
COPY activities ./activities
RUN /opt/threadchat/bin/pip install --no-cache-dir --disable-pip-version-check --no-deps . \
    && /opt/threadchat/bin/pip check \
    && /opt/threadchat/bin/pip uninstall --yes --quiet pip setuptools

FROM ${BASE_IMAGE}
COPY --from=build /opt/threadchat /opt/threadchat
# A fixed numeric id, so Kubernetes' runAsNonRoot can verify it without a passwd entry.
USER 10001:10001
WORKDIR /tmp
ENV PATH=/opt/threadchat/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    LOG_FORMAT=json
# 3000: the bot (Slack events, /healthz, codec); 8081: the worker's WORKER_HEALTH_PORT as the
# manifests set it; 9464: METRICS_PORT as they set it.
EXPOSE 3000 8081 9464
ENTRYPOINT ["threadchat"]
CMD ["worker"]
