# The standalone trio-culler container: a culler that reaches a hub over the network with a service token.
#
#   docker build --tag trio-culler:dev .
#   docker run --rm -e JUPYTERHUB_API_TOKEN -e JUPYTERHUB_API_URL=http://hub.internal:8081/hub/api \
#       trio-culler:dev --timeout=3600 --cull-every=600
#
# Nothing secret is baked in: the token comes from the environment at run time. Arguments after the image
# name are the culler's options (see docs/recipes.md). tests/test_container_install.py replays the install
# step below in a fresh virtual environment, since CI has no container engine.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY . .
RUN pip install --no-cache-dir .

# A fixed, numeric uid/gid, so that Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
RUN groupadd --system --gid 10001 culler \
    && useradd --system --uid 10001 --gid 10001 --home-dir /home/culler --create-home --shell /usr/sbin/nologin culler
USER 10001:10001
# An empty working directory: the culler reads ./idle_culler_config.py when one exists (mount one here, or
# pass --config=PATH).
WORKDIR /home/culler

# The culler drains on SIGTERM: requests in flight get --grace-period seconds (default 5), then it exits 0.
STOPSIGNAL SIGTERM
ENTRYPOINT ["trio-culler"]
