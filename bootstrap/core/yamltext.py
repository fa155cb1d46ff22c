"""YAML text for every file vboot generates (Prometheus config and rules, Kubernetes values and manifests).

One style, so the same rule groups read the same in the local rules file and in the PrometheusRule of the
Kubernetes export: block style, keys in the order given, lists indented under their key, and no folding of
long strings (a PromQL expression or an alert description stays on one line, as promtool and grep see it).
"""

from __future__ import annotations

from functools import cache
from typing import Any


def to_yaml(data: Any) -> str:
    """``data`` (plain dicts, lists, strings and numbers) as YAML text."""
    import yaml  # here, not at the top: importing vboot's core modules must not load PyYAML

    return yaml.dump(data, Dumper=_dumper(), sort_keys=False, default_flow_style=False, width=10_000,
                     allow_unicode=True)


@cache
def _dumper() -> type:
    import yaml

    class Dumper(yaml.SafeDumper):
        def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
            super().increase_indent(flow, False)  # lists indented under keys

    return Dumper
