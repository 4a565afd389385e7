"""The remote-control HTTP API (runs on the enforcer's own asyncio loop): docs/api.md."""
