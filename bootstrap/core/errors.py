"""The one family of errors vboot raises for expected failures.

Each error carries a stable ``code`` (used in the JSON envelope), an ``exit_code`` and a ``hint`` that names
the next thing to do. The CLI catches :class:`VbootError` once, at the entry point, and prints one line;
a traceback appears only with ``VBOOT_DEBUG=1``.

Every condition a user can meet is raised as a subclass with its own code; the base class is never raised
itself (its ``error`` code would tell a script nothing). README.md's exit-code table lists every code with
its exit code, and ``tests/test_errors_contract.py`` holds every subclass and every raise site to that table.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

# Exit codes shared by every command. 0 = ok, 1 = a check/command failed, 2 = usage or configuration.
EXIT_OK = 0
EXIT_FAIL = 1
EXIT_USAGE = 2
EXIT_NETWORK = 3
EXIT_NOT_FOUND = 4
EXIT_DISK = 5
EXIT_INTEGRITY = 6
EXIT_CONFLICT = 7
EXIT_STARTUP = 8
EXIT_SIGINT = 130
EXIT_SIGTERM = 143


class VbootError(Exception):
    """Base class: a message for people, a stable code for programs, and the next action."""

    code = "error"
    exit_code = EXIT_FAIL

    def __init__(self, message: str, hint: str = "", **context: Any) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.context = context

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"code": self.code, "message": self.message, "hint": self.hint}
        if self.context:
            out["context"] = {k: v for k, v in self.context.items() if _jsonable(v)}
        return out


def _jsonable(value: Any) -> bool:
    return isinstance(value, (str, int, float, bool, type(None), list, dict))


class UsageError(VbootError):
    """The command line or a value passed to it is wrong."""

    code = "usage"
    exit_code = EXIT_USAGE


class UnsafeCacheRootError(UsageError):
    """A cache root (from an environment variable) is no cache of its own: ``/``, a home, a system directory."""

    code = "unsafe_cache_root"


class ProfileError(VbootError):
    """A profile file is missing, malformed, or names an unknown key."""

    code = "profile_invalid"
    exit_code = EXIT_USAGE


class ProfileNotFoundError(ProfileError):
    """No profile of that name (built-in or user), or no file at that path."""

    code = "profile_not_found"


class NetworkError(VbootError):
    """The model hub (or another server) could not be reached."""

    code = "network"
    exit_code = EXIT_NETWORK


class ScrapeError(NetworkError):
    """A server's /metrics could not be read (connection refused, timeout, an HTTP error, not an exposition):
    `vboot top` shows the server as down, `top --once` fails with this code."""

    code = "server_down"


class ModelNotFoundError(VbootError):
    """The hub says the model or revision does not exist, or it is not in the local cache."""

    code = "model_not_found"
    exit_code = EXIT_NOT_FOUND


class NotFoundError(VbootError):
    """A named thing (server, run, kernel) does not exist."""

    code = "not_found"
    exit_code = EXIT_NOT_FOUND


class NotEnoughSpaceError(VbootError):
    """Refused before writing: the target filesystem has less free space than needed."""

    code = "not_enough_space"
    exit_code = EXIT_DISK


class DiskFullError(VbootError):
    """The disk filled up while writing (ENOSPC)."""

    code = "disk_full"
    exit_code = EXIT_DISK


class IntegrityError(VbootError):
    """A downloaded file does not match its published checksum or size."""

    code = "integrity"
    exit_code = EXIT_INTEGRITY


class MissingDependencyError(VbootError):
    """A package vboot itself needs is missing from vboot's own environment (an install made with --no-deps)."""

    code = "missing_dependency"
    exit_code = EXIT_USAGE


class CacheUnwritableError(VbootError):
    """The model cache cannot be written (permissions, a read-only filesystem): not a matter of free space."""

    code = "cache_unwritable"
    exit_code = EXIT_DISK


class OutputUnwritableError(VbootError):
    """Files vboot was asked to write (`export k8s --out`) cannot be written: permissions, a read-only place."""

    code = "output_unwritable"
    exit_code = EXIT_DISK


class ConflictError(VbootError):
    """Something already holds what we need: a port, a run name, VRAM."""

    code = "conflict"
    exit_code = EXIT_CONFLICT


class PortInUseError(ConflictError):
    """The port serve (or Prometheus) would bind is taken; the message names the holder."""

    code = "port_in_use"


class NotOursError(ConflictError):
    """A run record names a process that vboot cannot prove it started (a stale or forged record: no create
    time, another process group, another program): vboot signals nothing of it."""

    code = "not_vboots"


class RunRecordInvalid(NotFoundError):
    """The run record of a named server is malformed (bad JSON, wrong fields, not a file): it is not used."""

    code = "run_record_invalid"


class PreflightError(ConflictError):
    """A pre-flight check failed before anything heavy started."""

    code = "preflight"


class SleepUnavailableError(ConflictError):
    """`vboot sleep`/`wake` on a server that has no sleep mode: the CPU build of vLLM (none there), or a server
    started without `enable_sleep_mode`."""

    code = "sleep_unavailable"


class VenvConflictError(ConflictError):
    """`vboot setup` will not touch its target: not a venv, a broken one, another Python, or the other build."""

    code = "venv_conflict"


class NoVllmBuildError(ConflictError):
    """No vLLM build runs on this box's GPU or driver (too old a driver, too old a GPU); `--cpu` is the user's
    call, never a silent fallback."""

    code = "no_vllm_build"


class VllmNotFoundError(VbootError):
    """No usable vLLM installation in the chosen Python environment."""

    code = "vllm_not_found"
    exit_code = EXIT_NOT_FOUND


class StartupError(VbootError):
    """vLLM (or Prometheus) exited or never became healthy during startup."""

    code = "startup_failed"
    exit_code = EXIT_STARTUP


class ConfirmationRequired(VbootError):
    """A destructive command ran without --yes where nobody can answer a prompt."""

    code = "confirmation_required"
    exit_code = EXIT_USAGE


class SetupError(VbootError):
    """A `vboot setup` step (venv creation, install) failed; the message names the step and the log."""

    code = "setup_failed"
    exit_code = EXIT_FAIL


class SetupVerifyError(SetupError):
    """The new environment was installed but does not work: vllm does not import, its extensions link a CUDA
    runtime the driver cannot run, or torch sees no GPU where one is present."""

    code = "setup_verify_failed"


class SystemdUnavailableError(VbootError):
    """systemd (the system manager, or the user's) is not running here, or refused a unit."""

    code = "systemd_unavailable"
    exit_code = EXIT_NOT_FOUND


class ReceiverError(VbootError):
    """An alert receiver of the profile's [alerts] cannot be used (its variable is unset, its value not a URL).
    The message names the variable, never its value."""

    code = "alerts_receiver"
    exit_code = EXIT_USAGE


# --- inside vboot only ------------------------------------------------------------------------------------------
# Raised and caught inside vboot, never shown as they are: their callers turn them into one of the errors above
# or into a warning. (The signal carriers of bootstrap.cli.interrupt stay there: the console script raises them
# before anything is imported.)

class RunRecordError(ValueError):
    """A run record that cannot be trusted as one (unreadable, not a regular file, wrong fields); the runs module
    skips it with a warning (RunProblem) or reports :class:`RunRecordInvalid`."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


class MountCrossing(OSError):
    """The delete met a mount point (another device, or a path in the mount table) and stopped there; `disk
    clean` reports the item as not removed."""


class NotElf(ValueError):
    """The bytes are not an ELF file the reader (bootstrap.probes.elf) understands, or are truncated."""
