"""Test doubles for external services (fake OpenAI-compatible HTTP server)."""
