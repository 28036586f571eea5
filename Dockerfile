# syntax=docker/dockerfile:1
# A slim image of the gateway. Config and policies are mounted; state and audit live in volumes.
#   docker build -t access-gateway .
#   docker run -p 8080:8080 -v $PWD/config:/etc/gateway/config:ro \
#     -v $PWD/policies:/etc/gateway/policies:ro -v gateway-state:/var/lib/gateway access-gateway
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY gateway ./gateway
RUN pip wheel --no-cache-dir --wheel-dir /wheels ".[postgres,redis]"

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
RUN useradd --system --uid 10001 --home-dir /var/lib/gateway --create-home gateway \
    && mkdir -p /etc/gateway/config /etc/gateway/policies /var/log/gateway \
    && chown gateway /var/log/gateway
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
COPY docker/gateway.yaml /etc/gateway/config/gateway.yaml
COPY policies /etc/gateway/policies
USER gateway
WORKDIR /var/lib/gateway
VOLUME ["/var/lib/gateway", "/var/log/gateway"]
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
    CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8080/_gateway/healthz', timeout=2).status == 200 else 1)"
ENTRYPOINT ["gateway"]
CMD ["run", "--config", "/etc/gateway/config/gateway.yaml"]
