"""Metrics: what the server counts and measures, handed to a metrics backend (Ray's lives in serve/on_ray/).
Nothing here imports Ray."""
