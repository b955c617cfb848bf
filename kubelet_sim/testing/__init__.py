"""Test support shipped with the package: a real distribution registry runner, TLS material,
a token server and a deterministic synthetic-image builder. Used by the tests, the demo and the
benchmarks; nothing in the engine imports it."""
