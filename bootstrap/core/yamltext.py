"""YAML text for every file vboot generates (Prometheus config and rules, Kubernetes values and manifests).

One style, so the same rule groups read the same in the local rules file and in the PrometheusRule of the
Kubernetes export: block style, keys in the order given, lists indented under their key, and no folding of
long strings (a PromQL expression or an alert description stays on one line, as promtool and grep see it).

Values come from profiles, which may hold anything, and the files are read by more than one YAML dialect:
PyYAML and Helm's go-yaml v2 (sigs.k8s.io/yaml) speak YAML 1.1, kubectl's newer readers and ruamel YAML 1.2. So a
string is written

- double-quoted with escapes when it holds a character that is not printable: line breaks of either dialect
  (``\\n``, ``\\r``, NEL U+0085, U+2028, U+2029, which YAML 1.1 breaks on and 1.2 does not), tabs, other control
  characters, a byte-order mark; PyYAML would otherwise fold such a string over lines that a 1.2 reader joins
  differently;
- single-quoted when some dialect would read it, plain, as something else: ``1e3`` (a float in YAML 1.2 and
  go-yaml, a string in PyYAML), ``0o17``, ``y``/``n``/``on`` (booleans in YAML 1.1 and go-yaml v2);
- otherwise as PyYAML chooses (plain where that is unambiguous).

Comments are never built by hand from values: :func:`comment` makes one ``#`` line of any text.
"""

from __future__ import annotations

import re
from functools import cache
from typing import Any

# Plain scalars that some reader takes for a number, a boolean or null although PyYAML writes them unquoted (it
# quotes what its own YAML 1.1 resolver would not read back as a string; these are the others).
_AMBIGUOUS = re.compile(r"""
    [-+]?(?:\.[0-9]+|[0-9][0-9_]*(?:\.[0-9_]*)?)(?:[eE][-+]?[0-9]+)?   # 1e3, 1_000, .5: numbers in 1.2 / go-yaml
  | [-+]?\.(?:inf|Inf|INF) | \.(?:nan|NaN|NAN)
  | 0o[0-7_]+ | [-+]?0x[0-9a-fA-F_]+ | [-+]?0b[01_]+                  # 1.2 octal, 1.1/1.2 hex and binary
  | [-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+(?:\.[0-9_]*)?                   # 1.1 sexagesimal: 1:30
  | ~ | null | Null | NULL | true | True | TRUE | false | False | FALSE
  | yes | Yes | YES | no | No | NO | on | On | ON | off | Off | OFF | y | Y | n | N
  | << | =
""", re.VERBOSE)


def _needs_escapes(text: str) -> bool:
    return not text.isprintable()  # line breaks of every kind, tabs, control and format characters, NBSP, BOM


def to_yaml(data: Any) -> str:
    """``data`` (plain dicts, lists, strings and numbers) as YAML text."""
    import yaml  # here, not at the top: importing vboot's core modules must not load PyYAML

    return yaml.dump(data, Dumper=_dumper(), sort_keys=False, default_flow_style=False, width=10_000,
                     allow_unicode=True)


def comment(text: str) -> str:
    """``text`` as one YAML comment line (``# ...\\n``): every character that could end the line in some reader
    (``\\n``, ``\\r``, ``\\v``, ``\\f``, NEL, U+2028, U+2029) or that is not printable is written as its escape
    (``\\u2028``), so no value inside ``text`` can end the comment and start YAML of its own."""
    from bootstrap.core.textsafe import one_line

    return f"# {one_line(text)}".rstrip() + "\n"


@cache
def _dumper() -> type:
    import yaml

    class Dumper(yaml.SafeDumper):
        def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
            super().increase_indent(flow, False)  # lists indented under keys

    def represent_str(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
        style = '"' if _needs_escapes(data) else "'" if _AMBIGUOUS.fullmatch(data) else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)

    Dumper.add_representer(str, represent_str)
    return Dumper
