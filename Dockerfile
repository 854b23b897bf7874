# The fedacq node image (docker-compose.yml). CPU-only; torch is not installed.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY fedacq ./fedacq
COPY protocols ./protocols
RUN pip install --no-cache-dir .
