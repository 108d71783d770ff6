"""`DatasetError` (defined in `synthgap.errors`, re-exported here) and the report of records skipped under
``skip_invalid``."""

from __future__ import annotations

from synthgap.errors import DatasetError

__all__ = ["DatasetError", "SkipReport"]


class SkipReport:
    """Collects the records skipped under ``skip_invalid`` and summarises them by kind."""

    def __init__(self) -> None:
        self.errors: list[DatasetError] = []

    def add(self, error: DatasetError) -> None:
        self.errors.append(error)

    def __len__(self) -> int:
        return len(self.errors)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for e in self.errors:
            out[e.kind] = out.get(e.kind, 0) + 1
        return out

    def summary(self) -> str:
        if not self.errors:
            return "no records skipped"
        parts = ", ".join(f"{n} {k}" for k, n in sorted(self.counts().items()))
        return f"skipped {len(self.errors)} invalid records ({parts})"
