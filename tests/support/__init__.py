"""Test doubles shared by unit and integration tests: a fault-injecting IMDS and a fake Kubernetes API."""
