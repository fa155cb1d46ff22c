"""`vboot env`'s and `vboot kernel`'s reports (see bootstrap.core.reports)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # types only: the command imports its reports on its start path
    from bootstrap.core.envplan import EnvVar
    from bootstrap.core.shellenv import KernelInfo


@dataclass(frozen=True)
class EnvExports:
    """`vboot env`: the variables and the text that sets them in the chosen format."""

    profile: str
    format: str  # a shell (bash, zsh, fish, ...) or "dotenv"
    variables: tuple[EnvVar, ...]
    warnings: tuple[str, ...]
    text: str

    @property
    def status(self) -> str:
        return "warn" if self.warnings else "ok"


@dataclass(frozen=True)
class KernelInstalled:
    name: str
    path: str
    python: str
    profile: str
    display_name: str
    env: Mapping[str, str]
    ipykernel_installed: bool  # installed into the environment now
    replaced: bool  # a kernel of that name was there before


@dataclass(frozen=True)
class KernelListing:
    kernels_dir: str
    kernels: tuple[KernelInfo, ...]


@dataclass(frozen=True)
class KernelRemoved:
    name: str
    path: str
    removed: bool = True
