"""Reminders and repeating tasks: when the next occurrence of a series is due."""
