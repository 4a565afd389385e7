"""Fault soak and crash-recovery tests."""
