"""The HTTP service: boxes for any site backend (PHP, Node, Java), live updates behind a
token, health, readiness and Prometheus metrics. Needs the ``[server]`` extra."""

from .app import ServiceSettings, create_app

__all__ = ["ServiceSettings", "create_app"]
