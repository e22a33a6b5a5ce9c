"""Per-connection token buckets for the proxy: pure bucket math and a Redis-backed bucket.

Imports nothing from the services; the proxy's rate-limit stage calls into it.
"""
