# One small image for both entrypoints:
#   controller:  spotguard run            (Deployment)
#   node agent:  spotguard-nodewatch      (DaemonSet)
# Build: docker build -t spotguard:dev .
FROM python:3.11-slim AS build
WORKDIR /src
COPY setup.cfg pyproject.toml README.md ./
COPY controller ./controller
COPY nodewatch ./nodewatch
COPY sandbox ./sandbox
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
# No compilers here: only the wheels built above are installed.
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links=/wheels spotguard \
    && rm -rf /wheels \
    && useradd --system --uid 65532 --no-create-home --shell /usr/sbin/nologin spotguard
USER 65532:65532
# The AWS SDK writes nothing at run time when HOME points at a read-only, empty place and the
# credentials come from IRSA (web identity) or the instance role; see docs/ for the read-only proof.
ENV HOME=/nonexistent PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
ENTRYPOINT ["spotguard"]
CMD ["run"]
