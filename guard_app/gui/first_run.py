"""The welcome shown when there is no config file yet.

Instead of an empty window, a first-time user chooses: add an exchange account (the
accounts dialog), try the demo on the built-in simulated exchange, or quit.
"""

from __future__ import annotations

from PySide6.QtWidgets import QDialog, QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

WELCOME_TEXT = (
    "guard-app watches your exchange accounts and keeps each one under the position caps "
    "you set, closing the smallest positions first when an account goes over.\n"
    "It also gives you a confirmed Forced Unwind per user that closes everything, even "
    "when your trading bot has stopped."
)


class FirstRunDialog(QDialog):
    """Welcome dialog; ``choice`` is "accounts", "demo" or "quit" once it closes."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("first-run")
        self.setWindowTitle("Welcome to guard-app")
        self.choice = "quit"

        title = QLabel("<h2>Welcome to guard-app</h2>")
        text = QLabel(WELCOME_TEXT)
        text.setWordWrap(True)
        hint = QLabel(
            "There is no configuration yet. Add an exchange account to start, or try "
            "everything on a simulated exchange first: no real money is involved."
        )
        hint.setWordWrap(True)

        self.accounts_button = QPushButton("Add an exchange account…")
        self.accounts_button.setObjectName("first-run-accounts")
        self.demo_button = QPushButton("Try the demo (simulated exchange)")
        self.demo_button.setObjectName("first-run-demo")
        self.quit_button = QPushButton("Quit")
        self.quit_button.setObjectName("first-run-quit")
        self.accounts_button.setDefault(True)
        self.accounts_button.clicked.connect(lambda: self._choose("accounts"))
        self.demo_button.clicked.connect(lambda: self._choose("demo"))
        self.quit_button.clicked.connect(lambda: self._choose("quit"))

        buttons = QHBoxLayout()
        buttons.addWidget(self.quit_button)
        buttons.addStretch(1)
        buttons.addWidget(self.demo_button)
        buttons.addWidget(self.accounts_button)

        layout = QVBoxLayout(self)
        layout.addWidget(title)
        layout.addWidget(text)
        layout.addWidget(hint)
        layout.addLayout(buttons)
        self.setMinimumWidth(520)

    def _choose(self, choice: str) -> None:
        self.choice = choice
        if choice == "quit":
            self.reject()
        else:
            self.accept()


def first_run_choice(parent: QWidget | None) -> str:
    """Ask a first-time user what to do: "accounts", "demo" or "quit"."""
    dialog = FirstRunDialog(parent)
    try:
        dialog.exec()
        return dialog.choice
    finally:
        dialog.deleteLater()
