"""serve: load optiserve artifacts into a Ray Serve application speaking KServe V2.

Imports nothing from `optimize` but `optimize.manifest`.
"""
