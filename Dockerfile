# One image for every component: `trunkline operator | control | edge | media | cdr`.
# BASE: any Debian-like image with python3 (>= 3.11) and its venv module; tests/k8s/images.sh builds
# one with mmdebstrap. WHEELS: a folder of the build context holding the trunkline wheel and every
# dependency's, for builds without a package index (tests/k8s/images.sh); empty: build from the index.
# BUILD_BASE: the build stage's base, BASE by default; one with binutils (strip) gets the shared
# objects stripped (the index build installs build-essential, which has it).
ARG BASE=python:3.11-slim
ARG BUILD_BASE=${BASE}
FROM ${BUILD_BASE} AS build
ARG WHEELS=
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY . .
# The install is a venv built in a throwaway stage: no compiler or source tree in the final image.
# Pruned after the install, as nothing runs them: the installer (pip, setuptools); the Kubernetes
# client's asyncio copy, kubernetes/aio (~70 MB; kopf speaks aiohttp, our code the synchronous client);
# its typed API classes and models (~57 MB with their bytecode: imported lazily by name, and our code
# only calls ApiClient.call_api with plain JSON); the shared objects' symbol tables (~26 MB; strip
# --strip-unneeded keeps the dynamic symbols they link by). docs/kubernetes.md has the sizes.
RUN python3 -m venv /opt/trunkline \
    && if [ -n "$WHEELS" ]; then \
         /opt/trunkline/bin/pip install --no-index --find-links "/src/$WHEELS" trunkline; \
       else \
         apt-get update && apt-get install -y --no-install-recommends build-essential python3-dev \
         && /opt/trunkline/bin/pip install /src; \
       fi \
    && /opt/trunkline/bin/python -m pip uninstall --yes --quiet pip setuptools \
    && site="$(echo /opt/trunkline/lib/python3*/site-packages)" \
    && rm -rf "$site/kubernetes/aio" \
    && for typed in "$site/kubernetes/client/api" "$site/kubernetes/client/models"; do \
         find "$typed" -name '*.py' ! -name __init__.py -delete \
         && find "$typed" -name '*.pyc' ! -name '__init__.*' -delete; \
       done \
    && if command -v strip >/dev/null; then \
         find /opt/trunkline -name '*.so*' -type f -exec strip --strip-unneeded {} +; \
       else \
         echo "no strip in the build stage: shared objects left as they are"; \
       fi \
    && cd / && /opt/trunkline/bin/python -c 'import trunkline.cli, kubernetes, kopf, grpc, uvloop, psycopg, \
         cryptography.x509, pylibsrtp; from kubernetes.client import ApiClient, Configuration; \
         from trunkline.sip.compiled import COMPILED, compiled_modules; \
         print(f"SIP core compiled: {len(compiled_modules())}/{len(COMPILED)} modules")'

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
