"""Reliability and security: real faults, hostile input and concurrency (`make reliability`)."""
