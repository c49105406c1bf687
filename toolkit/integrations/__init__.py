"""Integrations with frameworks that use toolkit caches."""
