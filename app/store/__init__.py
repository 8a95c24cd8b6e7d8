"""The DuckDB owner. Only the API process opens the file; workers hand results over as files."""

from app.store.duck import IngestError, StatsStore

__all__ = ["IngestError", "StatsStore"]
