"""Thin Click commands, the one output module and the one error handler."""
