# One image for every process (api, mcp, migrate, relay, scheduler); the command differs.
# It runs as uid 10001 on a read-only root filesystem: the only writable places are /tmp
# and DATA_DIR (/app/data), which the orchestrator mounts (an emptyDir, a tmpfs, a volume).

FROM python:3.11-slim AS build
ENV UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_PYTHON_DOWNLOADS=never
RUN pip install --no-cache-dir "uv>=0.5,<1"
WORKDIR /app
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --frozen --no-dev --no-install-project
COPY backend ./backend
COPY mcp_server ./mcp_server
COPY alembic.ini ./
RUN uv sync --frozen --no-dev

# The runtime: the built environment and the code, without uv or pip's caches. Bytecode
# was compiled above, since nothing can be written next to the sources at run time.
FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 \
    PATH="/app/.venv/bin:$PATH" DATA_DIR=/app/data
WORKDIR /app
COPY --from=build /app /app
RUN groupadd --gid 10001 app \
    && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /app --shell /usr/sbin/nologin app \
    && mkdir -p /app/data && chown 10001:10001 /app/data
# Numeric, so that Kubernetes can check runAsNonRoot without a runAsUser of its own.
USER 10001:10001
VOLUME ["/app/data"]
EXPOSE 8000 8001
CMD ["todo-assistant", "api", "--host", "0.0.0.0", "--port", "8000"]
