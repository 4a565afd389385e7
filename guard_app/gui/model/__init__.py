"""The window's view model: pure Python, no Qt (an import-linter contract keeps it so).

Everything the window draws is computed here from enforcer events, so it is testable
without a QApplication.
"""
