"""Integrations with other frameworks; each lives in its own subpackage and is optional."""
