"""Per-connection token buckets for the proxy.

    bucket        pure, exact token-bucket math with the clock passed in
    policy        which limit applies to which integration; configuration
    keys          one bucket per connection, and its Redis key
    local         in-process buckets (one process, no Redis)
    redis_bucket  buckets in Redis, one atomic Lua script per take; fails open
    limiter       `RateLimiter`: the policy plus the buckets, as the proxy holds it

Imports nothing from the services; the proxy's rate-limit stage calls into it.
"""
