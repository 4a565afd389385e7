"""The Qt-free heart of guard-app: models, policy, enforcer, brokers, state, config, secrets.

Nothing in this package may import PySide6, pyqtgraph or qasync (an import-linter
contract in CI keeps it so): the enforcer must run headless and be testable without
a QApplication.
"""
