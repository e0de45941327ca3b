"""Real processes for tests: redis-server (and Sentinel), started on loopback ports and cleaned up."""
