"""Control plane: HTTP, storage, scheduling. Never imports torch."""
