"""`vboot profiles`'s reports (see bootstrap.core.reports)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from bootstrap.core.envelope import key_when_set

if TYPE_CHECKING:  # types only: the command imports its reports on its start path
    from bootstrap.core.profiles import Profile


@dataclass(frozen=True)
class ProfileRow:
    """One profile of `vboot profiles`. A profile hidden by a user profile of the same name carries ``shadowed``;
    one that does not load carries ``error`` instead of what it serves."""

    name: str
    path: str
    builtin: bool
    valid: bool
    shadowed: bool | None = key_when_set()
    error: str | None = key_when_set()
    model: str | None = key_when_set()
    source: str | None = key_when_set()
    device: str | None = key_when_set()
    port: int | str | None = key_when_set()  # the port serve binds without flags
    description: str | None = key_when_set()


@dataclass(frozen=True)
class ProfileListing:
    profiles: tuple[ProfileRow, ...]
    user_dir: str


@dataclass(frozen=True)
class ProfileShown:
    """`vboot profiles NAME`: the profile in full, secrets masked (bootstrap.core.profiles.shown)."""

    profile: Profile
