"""Real servers the tests (and benchmarks) talk to over HTTP on 127.0.0.1: S3 and a STAC API."""
