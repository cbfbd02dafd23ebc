# optiserve serving image (CPU). The serving stage needs no torch: only the base
# dependencies in pyproject.toml. Mount or copy artifacts to /artifacts.
#   docker build -t optiserve .
#   docker run -p 8000:8000 -p 8080:8080 -v $PWD/artifacts:/artifacts:ro optiserve /artifacts/digits
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY optimize ./optimize
COPY serve ./serve
COPY optiserve ./optiserve
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
RUN useradd --create-home --uid 1000 optiserve
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER optiserve
WORKDIR /home/optiserve
EXPOSE 8000 8080
HEALTHCHECK --interval=15s --timeout=3s --start-period=60s \
    CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/v2/health/ready', timeout=2).status != 200)"
ENTRYPOINT ["optiserve", "serve", "--host", "0.0.0.0", "--port", "8000", "--metrics-port", "8080"]
