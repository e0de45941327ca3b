"""The /metrics of an edge's workers as one exposition: every family once, each sample labelled with
the worker it came from (`worker="0"`...). Each worker keeps its own registry (counters that are
plain Python numbers, callback gauges): merging their text is exact where prometheus_client's
multiprocess mode would need files on disk and drops callback gauges and custom collectors."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample


def merge(texts: Mapping[str, str]) -> list[Metric]:
    """The families of each worker's exposition (worker label -> text), samples labelled by worker.
    A worker whose text does not parse contributes nothing (it is counted unreachable elsewhere)."""
    families: dict[str, Metric] = {}
    for worker, text in texts.items():
        try:
            parsed = list(text_string_to_metric_families(text))
        except ValueError:
            continue
        for family in parsed:
            merged = families.get(family.name)
            if merged is None:
                merged = families[family.name] = Metric(family.name, family.documentation, family.type)
            elif merged.type != family.type:
                continue  # workers of one build agree; a stranger's family is not mixed in
            merged.samples += [
                Sample(s.name, {**s.labels, "worker": worker}, s.value, s.timestamp, s.exemplar)
                for s in family.samples
            ]
    return list(families.values())


class _Families(Collector):
    def __init__(self, families: Iterable[Metric]) -> None:
        self.families = list(families)

    def collect(self) -> Iterator[Metric]:
        return iter(self.families)


def exposition(texts: Mapping[str, str], own: CollectorRegistry) -> bytes:
    """The parent's own metrics (`own`), then its workers' merged."""
    workers = CollectorRegistry(auto_describe=False)
    workers.register(_Families(merge(texts)))
    return generate_latest(own) + generate_latest(workers)
