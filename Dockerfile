# eotiler: serves the bundled Sentinel-2 sample on 0.0.0.0:8000 by default.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY server ./server
COPY config ./config
COPY evalscripts ./evalscripts
COPY sample ./sample
RUN pip install --no-cache-dir . && rm -rf /src
WORKDIR /
EXPOSE 8000
CMD ["eotiler", "serve", "--host", "0.0.0.0", "--port", "8000"]
