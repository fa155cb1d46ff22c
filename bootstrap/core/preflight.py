"""Doctor's checks as `vboot serve`'s pre-flight: one diagnosis of the run serve will make, and the verdict that
lets it start or stops it (with the error that names the fix) before anything heavy happens."""

from __future__ import annotations

from collections.abc import Sequence

from bootstrap.core.checks import CheckResult, Collaborators, Facts, Status, run_checks
from bootstrap.core.environ import Environ
from bootstrap.core.errors import PortInUseError, PreflightError, VllmNotFoundError
from bootstrap.core.profiles import ServeSettings
from bootstrap.core.vllm_env import choose_python

SERVE_CHECKS = ("nvidia.driver", "torch", "vllm", "disk", "budget", "vram", "leftovers", "port", "env.alloc_conf",
                "env.modelscope", "env.cuda_visible_devices", "env.misc")


def diagnose(settings: ServeSettings, env: Environ, *, collab: Collaborators,
             check_ids: Sequence[str] | None = None) -> tuple[Facts, list[CheckResult]]:
    """Run doctor's checks against resolved settings; shared by `vboot doctor` and `vboot serve`'s pre-flight,
    so the pre-flight judges exactly what serve will run (its port, cache dir, extra vLLM arguments).
    ``check_ids``: None runs every check, an empty sequence none (`vboot serve --skip-preflight`)."""
    choice = choose_python(env, settings.vllm_python)
    facts = Facts(settings, env, choice.python, choice.origin, collab)
    return facts, run_checks(facts, check_ids)


def verdict(facts: Facts, results: Sequence[CheckResult], profile_name: str) -> list[CheckResult]:
    """Serve may start: the warnings to show. Otherwise raises the error of the first failure (a taken port as
    :class:`PortInUseError`, a missing vLLM as :class:`VllmNotFoundError`, else :class:`PreflightError`)."""
    by_id = {r.id: r for r in results}
    port_check = by_id.get("port")
    if port_check is not None and port_check.status != Status.OK:
        raise PortInUseError(port_check.summary, hint=port_check.hint, port=facts.settings.port)
    vllm = by_id.get("vllm")
    if vllm is not None and vllm.status == Status.FAIL and facts.install is None:
        raise VllmNotFoundError(vllm.summary, hint=vllm.hint)
    failed = [r for r in results if r.status == Status.FAIL]
    if failed:
        first = failed[0]
        more = f" (+{len(failed) - 1} more: {', '.join(r.id for r in failed[1:])})" if len(failed) > 1 else ""
        raise PreflightError(f"pre-flight {first.id}: {first.summary}{more}",
                             hint=(first.hint or "run `vboot doctor`") + f"; `vboot doctor --profile {profile_name}` "
                             "shows all findings")
    return [r for r in results if r.status == Status.WARN]
