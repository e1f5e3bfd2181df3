# syntax=docker/dockerfile:1
# Build a wheel in one stage, install it into a slim runtime as a non-root user in the next.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml constraints.txt README.md ./
COPY monitor ./monitor
RUN python -m pip install --no-cache-dir --upgrade pip==25.3 \
    && python -m pip wheel --no-cache-dir -c constraints.txt --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
COPY --from=build /wheels /wheels
RUN python -m pip install --no-cache-dir --no-index --find-links /wheels backup-job-monitor==0.1.0 \
    && rm -rf /wheels \
    && useradd --system --uid 10001 --create-home monitor
USER 10001
WORKDIR /home/monitor
ENTRYPOINT ["backup-monitor"]
CMD ["--help"]
