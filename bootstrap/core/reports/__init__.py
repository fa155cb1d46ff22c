"""What commands report: one frozen dataclass per command result, built from core's own records, one module per
command (``bootstrap.core.reports.doctor``, ``.disk``, ...) so a command imports only its own reports.

A command hands its report to the output layer inside a :class:`~bootstrap.core.envelope.CommandResult`; the
JSON ``data`` is the report through :func:`~bootstrap.core.envelope.to_jsonable` (fields in declaration order,
so the field order is the JSON's key order, pinned by the commands' --json tests), and the human view reads the
same fields. Nothing here prints or probes.
"""
