# memproxy production image: slim base, non-root, data volume, healthcheck.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY proxy ./proxy
COPY memory_core ./memory_core
RUN pip install --no-cache-dir --prefix=/install .

FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 \
    LITELLM_LOCAL_MODEL_COST_MAP=True \
    MEMPROXY_CONFIG=/app/configs/docker.yaml
COPY --from=build /install /usr/local
RUN useradd --create-home --uid 10001 memproxy && mkdir -p /data /app/configs \
    && chown memproxy:memproxy /data
COPY configs /app/configs
USER 10001
WORKDIR /app
VOLUME ["/data"]
EXPOSE 8787
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8787/health', timeout=2).status == 200 else 1)"]
ENTRYPOINT ["memproxy", "serve"]
