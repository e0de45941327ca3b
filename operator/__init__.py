"""trunkline.operator: reconciles Trunks, DIDs and Carriers, and deploys the data plane (kopf).

- platform.py: the platform settings (image, replicas, ports, Service types, Redis), read from the
  `<release>-platform` ConfigMap the Helm chart writes; it owns every data-plane object.
- builders.py: pure builders, Platform -> manifests (control, edge + UDP/TCP Services + HPA, media).
- status.py: pure status of the resources of a namespace (Ready/Degraded, reasons, drain).
- kube.py, reconcile.py: fetch, build, apply (server-side apply) and write status.
- handlers.py: thin kopf handlers; main.py: `trunkline operator ...`.
"""
