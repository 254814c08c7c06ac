# zkleader in a container, for the docker compose demo (docker-compose.yml).
# Debian 12 with Python 3.11, like the hosts zkleader targets; the package is
# installed from this checkout, without the optional systemd extra (no journald here).
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY pyproject.toml README.md ./
COPY zkleader/ zkleader/
RUN pip install . && cd / && rm -rf /src

WORKDIR /
# The configuration is mounted here (config/compose/host-N.yaml).
ENTRYPOINT ["zkleader"]
CMD ["run", "-c", "/etc/zkleader/zkleader.yaml"]
