"""Input/output: one storage layer (fsspec) for local / http(s) / gs / s3 paths with atomic writes, a stdlib
HTTP client with resumable range requests, safe archive extraction, verified downloads and folder locks."""
