"""guard-app: a desktop safety net that keeps crypto trading accounts under their caps."""

__version__ = "0.1.0"
APP_NAME = "guard-app"
