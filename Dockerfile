# The SmartStream worker and simulator image (official Python base).
FROM python:3.11.10-slim-bookworm
WORKDIR /app
COPY pyproject.toml README.md ./
COPY streams ./streams
COPY models ./models
COPY producers ./producers
RUN pip install --no-cache-dir .
ENV SMARTSTREAM_WEB_HOST=0.0.0.0 \
    SMARTSTREAM_DATA_DIR=/data
VOLUME /data
EXPOSE 6066
ENTRYPOINT ["smartstream"]
CMD ["worker"]
