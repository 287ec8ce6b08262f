"""Thin operators: validate arguments, call the platform, defer to a trigger, report."""
