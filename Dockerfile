# The ApraNova server. Every setting comes from the environment (see the
# README's settings table); `docker run -e MONGODB_URI=... -e JWT_SECRET=...`.
#   docker build -t apranova/server:0.1.0 .
FROM python:3.11.7-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HOST=0.0.0.0 \
    PORT=8000 \
    DATA_DIR=/data \
    LOG_FORMAT=json

WORKDIR /app
COPY setup.cfg pyproject.toml README.md ./
COPY server.py ./
COPY handlers ./handlers
COPY models ./models
COPY proxy ./proxy
COPY services ./services
COPY static ./static
RUN pip install . \
 && groupadd --system --gid 10001 apranova \
 && useradd --system --uid 10001 --gid apranova --home-dir /app --shell /usr/sbin/nologin apranova \
 && mkdir -p /data \
 && chown apranova:apranova /data

USER apranova
VOLUME ["/data"]
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import os, sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:%s/ready' % os.environ.get('PORT', '8000'), timeout=2).status == 200 else 1)"]
# SIGTERM drains in-flight requests (SHUTDOWN_TIMEOUT) before exiting.
STOPSIGNAL SIGTERM
CMD ["python", "server.py"]
