"""Reading Prometheus's text exposition format in tests: parsed by prometheus_client's own
parser into samples keyed by name and labels, so a test compares numbers, never text."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

Key = tuple[str, frozenset[tuple[str, str]]]


class Scrape:
    """One scrape's samples: `scrape["crossfarm_jobs", {"state": "queued", ...}]`; a
    sample the scrape did not have reads 0, as a counter that never moved."""

    def __init__(self, text: str) -> None:
        self.samples: dict[Key, float] = {}
        self.families: dict[str, str] = {}
        for family in text_string_to_metric_families(text):
            self.families[family.name] = family.type
            for sample in family.samples:
                if sample.name.endswith("_created"):
                    continue  # when a series began: a timestamp, not a count
                self.samples[(sample.name, frozenset(sample.labels.items()))] = sample.value

    def __getitem__(self, key: tuple[str, dict[str, str]]) -> float:
        name, labels = key
        return self.samples.get((name, frozenset(labels.items())), 0.0)

    def names(self) -> set[str]:
        """Every sample name (a histogram's _bucket, _sum, _count) and family name."""
        return {name for name, _ in self.samples} | set(self.families)

    def labelled(self, name: str) -> list[dict[str, str]]:
        """The label sets `name` has samples for."""
        return [dict(labels) for sample, labels in self.samples if sample == name]

    def delta(self, before: Scrape) -> dict[Key, float]:
        """Every sample that moved since `before`, by how much (counters, histograms)."""
        moved = {}
        for key, value in self.samples.items():
            change = value - before.samples.get(key, 0.0)
            if change:
                moved[key] = change
        return moved


def key(name: str, **labels: str) -> Key:
    return (name, frozenset(labels.items()))
