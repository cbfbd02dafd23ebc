"""A request's way from received bytes to its reply: InferencePipeline (serve/pipeline/inference.py), then the
result cache, the shared (Redis) tier, coalescing of identical requests, and the dynamic batcher. Nothing here
imports Ray."""
