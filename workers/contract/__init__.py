"""THE contract between the control plane (`app/`) and the compute plane (`workers/`). Pydantic only, no torch.

- `vocab`: every domain word (StrEnums) and REGIME_OBJECTIVES
- `jobs`: typed params per job kind, `JobSpec`, `result_key()`
- `results`: one row model per DuckDB result table
- `artifacts`: artifact keys/URIs, progress, error and manifest reports
- `live`: the live-toggle protocol
- `version`: the code version (a hash of the worker sources) that every result key includes
"""
