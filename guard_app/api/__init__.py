"""The remote-control HTTP API and its Prometheus metrics (docs/api.md).

Runs on the enforcer's own asyncio loop: ``ApiService`` builds the observers that keep
the API's view and metrics up to date from the enforcer's events, and the aiohttp
server that answers from them.
"""

from guard_app.api.server import ApiService, ApiStartError

__all__ = ["ApiService", "ApiStartError"]
