# One image for every component: `trunkline operator | control | edge | media | cdr`.
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# Wheels are built in a throwaway stage, so no compiler or source tree ends up in the final image.
RUN apt-get update && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*
COPY pyproject.toml README.md ./
COPY trunkline/ trunkline/
COPY core/ core/
COPY sip/ sip/
COPY edge/ edge/
COPY media/ media/
COPY control/ control/
COPY operator/ operator/
COPY cdr/ cdr/
RUN pip wheel --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY --from=build /wheels /wheels
RUN pip install /wheels/*.whl && rm -rf /wheels
# The uid/gid the chart and the operator's pod specs run as (runAsUser: 10001).
RUN groupadd --system --gid 10001 trunkline \
    && useradd --system --uid 10001 --gid trunkline --no-create-home --home-dir /nonexistent trunkline
USER 10001:10001
WORKDIR /tmp
# SIP (UDP+TCP), SIP/TLS, control gRPC, media gRPC, HTTP health/metrics; RTP ports are configured.
EXPOSE 5060/udp 5060/tcp 5061/tcp 9000/tcp 9001/tcp 8080/tcp
ENTRYPOINT ["trunkline"]
CMD ["--help"]
