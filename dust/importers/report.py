"""What an import did: counts of what was imported, what was already there, and what was skipped and why."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

EXAMPLES = 3  # places named per skip reason: enough to find the rows, short enough to read


@dataclass
class Report:
    imported: Counter[str] = field(default_factory=Counter)
    existing: Counter[str] = field(default_factory=Counter)  # already imported by an earlier run: left as it was
    skipped: Counter[tuple[str, str]] = field(default_factory=Counter)  # (what, reason)
    where: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def skip(self, what: str, reason: str, where: str) -> None:
        """One ``what`` (e.g. "observations.csv rows") left out for ``reason``, found at ``where``."""
        self.skipped[(what, reason)] += 1
        places = self.where.setdefault((what, reason), [])
        if len(places) < EXAMPLES:
            places.append(where)

    @property
    def nothing_new(self) -> bool:
        return not +self.imported

    def lines(self) -> list[str]:
        """The report as plain lines, imported first, then already there, then skipped with reasons."""
        out = []
        if self.nothing_new:
            out.append("Nothing new: everything readable was already imported.")
        if +self.imported:
            out.append("Imported: " + ", ".join(f"{n} {what}" for what, n in self.imported.items() if n))
        if +self.existing:
            out.append("Already there: " + ", ".join(f"{n} {what}" for what, n in self.existing.items() if n))
        for (what, reason), n in sorted(self.skipped.items()):
            places = self.where[(what, reason)]
            more = " …" if n > len(places) else ""
            out.append(f"Skipped {n} {what}: {reason} (e.g. {', '.join(places)}{more})")
        out.extend(self.notes)
        return out
