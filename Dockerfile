# The SmartStream worker and simulator image (official Python base).
# Pin the base by digest where you build it: `docker buildx imagetools inspect
# python:3.11.10-slim-bookworm` prints it; write FROM python:3.11.10-slim-bookworm@sha256:...
# (this repository's build machines cannot reach a registry to look it up).
FROM python:3.11.10-slim-bookworm
WORKDIR /app
# Every package pinned and hash-checked (requirements/README.md), then the project itself.
COPY requirements/demo.lock ./requirements/
RUN pip install --no-cache-dir --require-hashes --no-deps -r requirements/demo.lock
COPY pyproject.toml README.md ./
COPY streams ./streams
COPY models ./models
COPY producers ./producers
RUN pip install --no-cache-dir --no-deps --no-build-isolation . \
    && useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin smartstream \
    && mkdir -p /data && chown smartstream /data
USER smartstream
ENV SMARTSTREAM_WEB_HOST=0.0.0.0 \
    SMARTSTREAM_DATA_DIR=/data
VOLUME /data
EXPOSE 6066
ENTRYPOINT ["smartstream"]
CMD ["worker"]
