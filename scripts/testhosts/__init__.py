"""The test-host harness behind scripts/testhost.py, by concern (stdlib only)."""
