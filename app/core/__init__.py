"""What every domain stands on: settings, the metadata DB, the DuckDB store, errors, dependencies."""
