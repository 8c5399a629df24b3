# eotiler: serves the bundled Sentinel-2 sample on 0.0.0.0:8000 by default.
#   docker build -t eotiler . && docker run -p 8000:8000 eotiler
# The Python minor version is the one the tests run on; constraints.txt pins every dependency.
FROM python:3.11-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY constraints.txt pyproject.toml README.md ./
COPY server ./server
COPY config ./config
COPY evalscripts ./evalscripts
COPY sample ./sample
# Serving needs no extras: the wheel carries the configuration, evalscripts and sample.
RUN pip install -c constraints.txt . && rm -rf /src

# An unprivileged user; its home holds the overview cache (~/.cache/eotiler/overviews).
RUN useradd --create-home --uid 10001 --user-group --shell /usr/sbin/nologin eotiler
USER eotiler
WORKDIR /home/eotiler

# `docker stop` sends SIGTERM and kills 10 s later (Docker's default): 8 s of grace for in-flight
# requests leaves the server time to exit on its own. With a longer stop timeout
# (`docker run --stop-timeout 35`, Compose `stop_grace_period: 35s`) raise it: -e EOTILER_GRACEFUL_TIMEOUT=30.
ENV EOTILER_HOST=0.0.0.0 EOTILER_PORT=8000 EOTILER_GRACEFUL_TIMEOUT=8
EXPOSE 8000
STOPSIGNAL SIGTERM
# Liveness only (/healthz): an unreachable catalogue or S3 is /readyz's business, not a reason to restart.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request as r; r.urlopen('http://127.0.0.1:%s/healthz' % os.environ['EOTILER_PORT'], timeout=4)"]
CMD ["eotiler", "serve"]
