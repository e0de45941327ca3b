# One image for every component: `trunkline operator | control | edge | media | cdr`.
# BASE: any Debian-like image with python3 (>= 3.11) and its venv module; tests/k8s/images.sh builds
# one with mmdebstrap. WHEELS: a folder of the build context holding the trunkline wheel and every
# dependency's, for builds without a package index (tests/k8s/images.sh); empty: build from the index.
ARG BASE=python:3.11-slim
FROM ${BASE} AS build
ARG WHEELS=
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY . .
# The install is a venv built in a throwaway stage: no compiler or source tree in the final image.
# Pruned after the install, as nothing runs them: the installer (pip, setuptools) and the Kubernetes
# client's asyncio copy, kubernetes/aio (~70 MB; kopf speaks aiohttp, our code the synchronous client).
RUN python3 -m venv /opt/trunkline \
    && if [ -n "$WHEELS" ]; then \
         /opt/trunkline/bin/pip install --no-index --find-links "/src/$WHEELS" trunkline; \
       else \
         apt-get update && apt-get install -y --no-install-recommends build-essential \
         && /opt/trunkline/bin/pip install /src; \
       fi \
    && /opt/trunkline/bin/python -m pip uninstall --yes --quiet pip setuptools \
    && rm -rf /opt/trunkline/lib/python3*/site-packages/kubernetes/aio \
    && cd / && /opt/trunkline/bin/python -c 'import trunkline.cli, kubernetes, kopf'

FROM ${BASE}
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PATH=/opt/trunkline/bin:/usr/local/bin:/usr/bin:/bin
COPY --from=build /opt/trunkline /opt/trunkline
# The uid/gid the chart and the operator's pod specs run as (runAsUser: 10001), with a read-only root
# filesystem there: nothing here writes outside /tmp (an emptyDir in the pod specs).
# Written directly: a minimal base has no groupadd/useradd.
RUN echo 'trunkline:x:10001:' >> /etc/group \
    && echo 'trunkline:x:10001:10001:trunkline:/nonexistent:/usr/sbin/nologin' >> /etc/passwd
USER 10001:10001
WORKDIR /tmp
# SIP (UDP+TCP), SIP/TLS, control gRPC, media gRPC, HTTP health/metrics; RTP ports are configured.
EXPOSE 5060/udp 5060/tcp 5061/tcp 9000/tcp 9001/tcp 8080/tcp
ENTRYPOINT ["trunkline"]
CMD ["--help"]
