"""serve: load optiserve artifacts and serve them over KServe V2, on Ray Serve.

A request goes: http/ (the wire: V2 parsing, guards, routes, the replica's own HTTP server) -> pipeline/
(InferencePipeline: deadlines, cache, coalescing, shared tier, batcher) -> runtimes/ (onnxruntime, torch,
TensorRT, LiteRT). observability/ counts it. on_ray/ runs all of this on Ray Serve and is the only part that knows Ray.
settings.py holds every setting; repository.py finds the artifacts; cli.py is `optiserve serve`.

Imports nothing from `optimize` but `optimize.manifest`.
"""
