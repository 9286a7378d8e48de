"""Tests of the sandbox Kubernetes API server (sandbox/kube)."""
