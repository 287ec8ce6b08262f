"""A small HTTP service to release: health, version, Prometheus metrics and fault knobs."""
