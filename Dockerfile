# syntax=docker/dockerfile:1
# Build a wheel in one stage; install it into a slim runtime that runs as a non-root user with a
# read-only root filesystem and one writable volume for the checkpoint (docs/operations.md).
# tests/test_container.py runs the installed wheel with exactly this stage's ENV, USER,
# ENTRYPOINT and CMD; keep every instruction it reads on the final stage.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml constraints.txt README.md ./
COPY monitor ./monitor
RUN python -m pip install --no-cache-dir --upgrade pip==25.3 \
    && python -m pip wheel --no-cache-dir -c constraints.txt --wheel-dir /wheels .

FROM python:3.11-slim
# No .pyc writes (the root filesystem is read-only); temp files and the checkpoint on the volume;
# the ops server reachable from outside the container.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TMPDIR=/var/lib/backup-monitor \
    BACKUP_MONITOR_STATE__PATH=/var/lib/backup-monitor/monitor.sqlite \
    BACKUP_MONITOR_OPS__LISTEN=0.0.0.0:9464 \
    BACKUP_MONITOR_LOG__FORMAT=json
COPY --from=build /wheels /wheels
RUN python -m pip install --no-cache-dir --no-index --find-links /wheels backup-job-monitor==0.1.0 \
    && rm -rf /wheels \
    && groupadd --system --gid 10001 monitor \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /var/lib/backup-monitor monitor \
    && mkdir -p /var/lib/backup-monitor \
    && chown 10001:10001 /var/lib/backup-monitor
VOLUME ["/var/lib/backup-monitor"]
WORKDIR /var/lib/backup-monitor
USER 10001:10001
EXPOSE 9464
# No curl in the image: the standard library asks /healthz on the configured port.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; port = os.environ.get('BACKUP_MONITOR_OPS__LISTEN', ':9464').rsplit(':', 1)[1]; urllib.request.urlopen(f'http://127.0.0.1:{port}/healthz', timeout=4)"]
# Exec form: backup-monitor is PID 1 and receives SIGTERM itself.
ENTRYPOINT ["backup-monitor"]
CMD ["run"]
