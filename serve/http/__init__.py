"""The wire: KServe V2 requests and replies over HTTP, parsed and checked before any work.

Protocol parsing (JSON, large bodies, the binary extension), guards (auth, sizes), the ASGI and FastAPI
routes, the ingress's stamp, and the replica's own HTTP/1.1 server. Nothing here imports Ray.
"""
