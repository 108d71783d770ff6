"""The one error type for malformed datasets: it always says which file, record and field."""

from __future__ import annotations


class DatasetError(ValueError):
    """A dataset record is malformed.

    ``file`` is the path/URI of the offending file, ``record`` identifies the record inside it
    (an index, an id, or a JSON path such as ``captures[3]``), ``field`` names the field.
    The message always carries all three when they are known, so a user can open the file and fix it.
    """

    def __init__(self, message: str, *, file: str | None = None, record: object = None,
                 field: str | None = None, kind: str = "invalid"):
        self.message = message
        self.file = file
        self.record = record
        self.field = field
        self.kind = kind  # a short machine-readable category, e.g. "box_outside_image"
        super().__init__(self._render())

    def _render(self) -> str:
        where = []
        if self.file is not None:
            where.append(str(self.file))
        if self.record is not None:
            where.append(f"record {self.record}")
        if self.field is not None:
            where.append(f"field '{self.field}'")
        return (": ".join(where) + ": " if where else "") + self.message


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
