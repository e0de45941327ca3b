"""How many CPUs this process may use: the CPUs it may run on (affinity), capped by the cgroup's CPU
quota (a container's CPU limit), rounded down, at least 1. One process per CPU is what a pod's limit
pays for; more only adds switching."""

from __future__ import annotations

import os
from pathlib import Path

CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")  # cgroup v2: "<quota> <period>" or "max <period>"


def cpus_allowed(affinity: int, cpu_max: str | None) -> int:
    """`affinity` CPUs, capped by a cgroup v2 `cpu.max` text (None: no cgroup file), at least 1."""
    count = max(1, affinity)
    fields = (cpu_max or "").split()
    if len(fields) == 2 and fields[0] != "max":
        try:
            quota, period = int(fields[0]), int(fields[1])
        except ValueError:
            return count
        if quota > 0 and period > 0:
            count = min(count, max(1, quota // period))
    return count


def cpu_limit() -> int:
    """This process's CPU count: affinity and the cgroup quota (`cpus_allowed`)."""
    try:
        cpu_max: str | None = CGROUP_CPU_MAX.read_text()
    except OSError:
        cpu_max = None
    return cpus_allowed(len(os.sched_getaffinity(0)), cpu_max)
