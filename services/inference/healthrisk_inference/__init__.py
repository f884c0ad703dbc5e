"""The REST inference service (FastAPI)."""
