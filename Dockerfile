# The fedacq node image (docker-compose.yml). CPU-only; torch is not installed.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml setup.py README.md ./
COPY fedacq ./fedacq
COPY protocols ./protocols
# gcc and GMP's headers build the compiled kernels (setup.py); the runtime keeps libgmp only
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev libgmp-dev \
    && pip install --no-cache-dir . \
    && apt-get purge -y gcc libc6-dev libgmp-dev && apt-get install -y --no-install-recommends libgmp10 \
    && apt-get autoremove -y && rm -rf /var/lib/apt/lists/*
