# The standalone trio-culler container: a culler that reaches a hub over the network with a service token.
#
#   docker build --tag trio-culler:dev .
#   podman build --tag trio-culler:dev .
#   docker run --rm -e JUPYTERHUB_API_TOKEN -e JUPYTERHUB_API_URL=http://hub.internal:8081/hub/api \
#       trio-culler:dev --timeout=3600 --cull-every=600
#
# Nothing secret is baked in: the token comes from the environment at run time. Arguments after the image
# name are the culler's options (see docs/recipes.md).
#
# BASE_IMAGE is any Debian-like image with python3 (>= 3.11) and its venv module, and groupadd/useradd: the
# official slim Python image by default (named in full, so that podman needs no short-name alias for it), or,
# say, a Debian image with python3 and python3-venv installed (--build-arg BASE_IMAGE=...). The culler lives in
# a virtual environment, so it never mixes with, or needs to override, the base's own Python packages.
#
# tests/integration/test_container.py builds this file with podman on a Debian base made by mmdebstrap and
# runs its entry point; tests/test_container_install.py checks what it can from the files alone.
ARG BASE_IMAGE=docker.io/library/python:3.12-slim

# --- build: a virtual environment with trio-culler and its dependencies, from only the files it needs ---
FROM ${BASE_IMAGE} AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1

# What `pip install` needs, and nothing else: no tests, no VCS data, no local virtual environments.
COPY pyproject.toml README.md LICENSE /src/
COPY trio_culler /src/trio_culler
RUN python3 -m venv /opt/trio-culler
RUN /opt/trio-culler/bin/python -m pip install --no-cache-dir /src

# --- the image: the base, the virtual environment, an unprivileged user; the source stays in the build stage ---
FROM ${BASE_IMAGE}

# A full PATH, not "...:$PATH": a base imported from a tarball has no PATH of its own to append to.
ENV PATH=/opt/trio-culler/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

# Owned by root and read-only to the culler: it cannot rewrite its own code.
COPY --from=build /opt/trio-culler /opt/trio-culler

# A fixed, numeric uid/gid, so that Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
RUN groupadd --gid 10001 culler \
    && useradd --uid 10001 --gid 10001 --no-log-init --home-dir /home/culler --create-home --shell /usr/sbin/nologin \
        culler
USER 10001:10001
# An empty working directory: the culler reads ./idle_culler_config.py when one exists (mount one here, or
# pass --config=PATH). Nothing else is written at run time, so a read-only root filesystem works.
WORKDIR /home/culler

# The culler drains on SIGTERM: requests in flight get --grace-period seconds (default 5), then it exits 0.
STOPSIGNAL SIGTERM
ENTRYPOINT ["trio-culler"]
