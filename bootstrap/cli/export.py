"""`vboot export k8s PROFILE`: Helm values and an HPA for vLLM production-stack, kube-prometheus-stack and
prometheus-adapter, generated from the profile that already serves locally."""

from __future__ import annotations

from pathlib import Path

import click

from bootstrap.cli import output
from bootstrap.core.envelope import CommandResult
from bootstrap.core.environ import Environ
from bootstrap.core.errors import ConflictError
from bootstrap.core.profiles import DEFAULT_PROFILE, load_profile
from bootstrap.core.reports.k8s import K8sExportReport, k8s_export_report


@click.group()
def export() -> None:
    """Export a profile to other platforms (Kubernetes)."""


@export.command("k8s")
@click.argument("profile", default=DEFAULT_PROFILE, required=False)
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Directory to write the files into (default: ./vboot-k8s-PROFILE).")
@click.option("--namespace", "-n", default="default", show_default=True,
              help="Namespace of the vLLM release and the HPA.")
@click.option("--release", default="vllm", show_default=True,
              help="Helm release name of vllm-stack (the Deployment is RELEASE-PROFILE-deployment-vllm).")
@click.option("--monitoring-namespace", default="monitoring", show_default=True,
              help="Namespace of kube-prometheus-stack and prometheus-adapter.")
@click.option("--replicas", default="1:2", show_default=True, metavar="MIN:MAX",
              help="Replica bounds of the autoscaler (N alone means N:N).")
@click.option("--queue-target", type=float, default=5, show_default=True, metavar="N",
              help="Waiting requests per pod (vllm:num_requests_waiting) the autoscaler aims for.")
@click.option("--force", is_flag=True, help="Replace existing files whose content differs.")
@output.json_option
def k8s(profile: str, out_dir: str | None, namespace: str, release: str, monitoring_namespace: str, replicas: str,
        queue_target: float, force: bool, as_json: bool) -> int:
    """Write Kubernetes files for PROFILE (default qwen) and print how to apply them.

    \b
    Files (in --out, default ./vboot-k8s-PROFILE):
      production-stack-values.yaml  vllm/vllm-stack: the model, vLLM arguments, GPUs, resources, env,
                                    the engine ServiceMonitor; an API key in the profile becomes a
                                    reference to a Secret you create (the key is never written)
      kube-prom-stack-values.yaml   kube-prometheus-stack: Prometheus, Alertmanager, Grafana (admin login
                                    from a Secret you create: no default password), vboot's vLLM rules
      prom-adapter-values.yaml      prometheus-adapter: vllm:num_requests_waiting as vllm_num_requests_waiting
      hpa.yaml                      autoscaling/v2 HorizontalPodAutoscaler on that metric
      grafana-dashboard.yaml        vboot's vLLM dashboard as a ConfigMap for Grafana's sidecar
                                    (grafana_dashboard: "1")

    A profile with [alerts] gets Alertmanager receivers whose URLs come from a Secret you create
    (the guide shows how, reading them from shell variables); the URLs are never written.

    Existing files with other content are kept unless --force. Profiles that serve a local directory
    (e.g. tiny) cannot be exported: pods cannot see your disk.
    """
    from bootstrap.core import k8s as core

    low, high = core.parse_replicas(replicas)
    options = core.K8sOptions(namespace=namespace, release=release, monitoring_namespace=monitoring_namespace,
                              min_replicas=low, max_replicas=high, queue_target=queue_target)
    prof = load_profile(profile, Environ())
    result = core.build_export(prof, options)
    out = Path(out_dir) if out_dir else Path(f"vboot-k8s-{prof.name}")
    plan = core.plan_writes(out, result, force=force)
    refused = [w for w in plan if w.action == "refuse"]
    if refused:
        names = "; ".join(f"{w.path} is {w.reason}" for w in refused)
        raise ConflictError(f"{len(refused)} file name(s) in {out} hold something other than a regular file: {names}",
                            hint="vboot writes only regular files and never through a link: remove them, or pass "
                                 "--out another directory", files=[str(w.path) for w in refused])
    blocked = core.conflicts(plan)
    if blocked:
        names = ", ".join(str(w.path) for w in blocked)
        raise ConflictError(f"{len(blocked)} file(s) exist with other content: {names}",
                            hint="pass --force to replace them, or --out another directory",
                            files=[str(w.path) for w in blocked])
    core.write_files(plan, result)
    report = k8s_export_report(result, options, out, plan)
    return output.emit(CommandResult("export k8s", report, status=report.status), human=_render)


def _render(data: K8sExportReport) -> None:
    con = output.console()
    con.print(f"[bold]{data.profile}[/] ({data.model}, {data.gpus_per_replica} GPU(s) per replica, "
              f"{data.min_replicas}-{data.max_replicas} replicas) -> [bold]{data.out_dir}[/]")
    for f in data.files:
        con.print(f"  {f.action:<9} {f.path}  [dim]{output.human_bytes(f.size_bytes)}[/]")
    for w in data.warnings:
        con.print(f"[yellow]warning:[/] {w}")
    con.print("\n[bold]Apply[/] (kube-prometheus-stack first: it brings the ServiceMonitor and PrometheusRule CRDs):")
    for cmd in data.guide:
        con.print(f"  {cmd}", markup=False)
