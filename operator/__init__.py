"""trunkline.operator: reconciles Trunks, DIDs and Carriers, and deploys the data plane (kopf).

- platform.py: the platform settings (image, replicas, ports, Service types, Redis), read from the
  `<release>-platform` ConfigMap the Helm chart writes; it owns every data-plane object.
- builders.py: pure builders, Platform -> manifests (control, edge + UDP/TCP Services + HPA, media).
- status.py: pure status of the resources of a namespace (Ready/Degraded, reasons, drain).
- kube.py, reconcile.py: fetch, build, apply (server-side apply) and write status.
- handlers.py: thin kopf handlers; main.py: `trunkline operator ...`.

This folder is also found as a top-level `operator` whenever the repository root is on `sys.path`
(`python -m pip`, `python -m pytest` or `python -c` run from the root). Imported under that name it
loads the standard library's `operator` in its place, so the root is a safe working directory.
"""

if __name__ == "operator":
    # Only what is loaded before site runs (frozen importlib machinery, os, sys): importlib.util would
    # import contextlib -> collections -> `from operator import eq`, which is this half-run module.
    import os
    import sys
    from importlib.machinery import PathFinder

    def _standard_operator() -> None:
        root = os.path.realpath(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        elsewhere = [p for p in sys.path if os.path.realpath(p or os.getcwd()) != root]
        spec = PathFinder.find_spec("operator", elsewhere)
        if spec is None or spec.loader is None:
            raise ImportError("the standard library's operator module is not on sys.path")
        module = type(sys)(spec.name)
        module.__spec__, module.__loader__, module.__file__ = spec, spec.loader, spec.origin
        # The import system returns whatever sys.modules holds once this file has run.
        sys.modules["operator"] = module
        spec.loader.exec_module(module)

    _standard_operator()
