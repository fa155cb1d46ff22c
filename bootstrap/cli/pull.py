"""`vboot pull`: download a profile's model through ModelScope (disk budget, progress, resume, integrity)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from bootstrap.cli import output
from bootstrap.core.envelope import CommandResult
from bootstrap.core.environ import Environ
from bootstrap.core.errors import UsageError
from bootstrap.core.paths import files_under
from bootstrap.core.reports.pull import LocalModel
from bootstrap.core.units import parse_size

if TYPE_CHECKING:
    from bootstrap.core.pull import PullResult


@click.command()
@click.argument("target", metavar="PROFILE|MODEL_ID")
@click.option("--revision", "-r", default=None, help="Branch, tag or commit (default: the profile's, else master).")
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="ModelScope cache root (default: the profile's cache_dir, else $MODELSCOPE_CACHE, "
                   "else ~/.cache/modelscope).")
@click.option("--offline", is_flag=True, help="Answer from the local cache only; never contact the hub.")
@click.option("--margin", default=None, metavar="SIZE",
              help="Free space to keep beyond the download (default max(2%, 256MiB); env VBOOT_PULL_MARGIN).")
@click.option("--max-workers", type=click.IntRange(1, 32), default=4, show_default=True,
              help="Files downloaded in parallel.")
@output.json_option
def pull(target: str, revision: str | None, cache_dir: Path | None, offline: bool, margin: str | None,
         max_workers: int, as_json: bool) -> int:
    """Download a model (a profile's, or OWNER/NAME) from ModelScope into the local cache.

    Before any byte moves, the repo's files are listed and their sizes compared with the free space of the
    cache's filesystem plus a margin; when short, the pull is refused with both numbers and the largest
    caches that could go. Interrupted downloads resume; every file is checked against its sha256 and size.
    A completed pull is recorded, so `vboot serve` and `vboot pull --offline` confirm the model without the
    hub and without re-hashing. MODELSCOPE_ENDPOINT and MODELSCOPE_CACHE are honoured.

    \b
    Examples:
      vboot pull qwen                              # the default profile's model
      vboot pull Qwen/Qwen2.5-0.5B-Instruct -r master --cache-dir /data/ms
      vboot pull qwen --offline --json             # is it there? (no network)

    Exit codes: 0 ok, 2 usage, 3 network, 4 unknown model/revision or not cached (--offline),
    5 not enough space / disk full, 6 integrity (sha256 or size) failure.
    """
    env = Environ()
    model_id, rev, cache, local = _resolve(target, revision, cache_dir, env)
    if local is not None:
        sizes = [st.st_size for _path, st in files_under(local)]
        found = LocalModel(model=model_id, revision=rev, path=str(local), bytes=sum(sizes), files=len(sizes))
        return output.emit(CommandResult("pull", found), human=_render)
    margin_bytes = None
    if margin is not None:
        try:
            margin_bytes = parse_size(margin)
        except ValueError as exc:
            raise UsageError(f"--margin: {exc}", hint="write e.g. --margin 1GB or --margin 0") from None

    from bootstrap.core.pull import ensure_model  # not needed for a local model

    with PullProgress() as bar:
        result = ensure_model(model_id, rev, cache, env, offline=offline, verify=not offline, progress=bar.update,
                              margin_bytes=margin_bytes, max_workers=max_workers, on_plan=bar.plan)
    return output.emit(CommandResult("pull", result), human=_render)


def _resolve(target: str, revision: str | None, cache_dir: Path | None, env: Environ
             ) -> tuple[str, str, Path, Path | None]:
    """(model id, revision, cache root, local dir for source = local) from a profile name/path or a model id.

    A bare model id is pulled as a profile of its own, so the cache root comes from the one place that ranks
    --cache-dir, the profile and the environment (``resolve_serve_settings``).
    """
    from bootstrap.core.profiles import ModelSpec, Profile, load_profile, local_model_dir, resolve_serve_settings

    looks_like_id = "/" in target and not target.endswith(".toml") and not Path(target).is_file()
    if looks_like_id:
        prof = Profile(name=target, description="", model=ModelSpec(id=target))
    else:
        prof = load_profile(target, env)
    if prof.model.source == "huggingface":
        raise UsageError(f"profile {prof.name!r} pulls from Hugging Face; `vboot pull` speaks ModelScope only",
                         hint="let vLLM download it at `vboot serve`, or change model.source to modelscope")
    cache = resolve_serve_settings(prof, env, cache_dir=str(cache_dir) if cache_dir else None).cache_dir
    return prof.model.id, revision or prof.model.revision or "master", cache, local_model_dir(prof)


class PullProgress:
    """One rich bar for the whole download (bytes, rate, ETA) on stderr; nothing when disabled.

    ``enabled=None``: on only when stderr is a terminal and --json is off. Use as a context manager and pass
    ``.update`` as ``ensure_model(..., progress=bar.update)`` (``vboot serve`` can do the same).
    """

    def __init__(self, enabled: bool | None = None) -> None:
        self.enabled = (not output.STATE.json and sys.stderr.isatty()) if enabled is None else enabled
        self._bar: output.DownloadBar | None = None

    def plan(self, plan: Any) -> None:
        if not self.enabled:
            return
        output.info(
            f"[bold]{plan.model}@{plan.revision}[/]: {len(plan.files)} files, {output.human_bytes(plan.total_bytes)};"
            f" {output.human_bytes(plan.needed_bytes)} to fetch, {output.human_bytes(plan.free_bytes)} free")

    def update(self, done: int, total: int) -> None:
        if not self.enabled:
            return
        if self._bar is None:
            self._bar = output.DownloadBar("pull", total=total, completed=done)
            return
        self._bar.update(done, total)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def __enter__(self) -> PullProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _render(data: PullResult | LocalModel) -> None:
    con = output.console()
    how = {
        "record": "already pulled (recorded; no hub contacted)",
        "cache": "found in the local cache (not verified by vboot: run `vboot pull` online to verify)",
        "local": "a local model: nothing to download",
    }.get(data.source, "verified, nothing to download")
    if not isinstance(data, LocalModel) and data.source not in ("record", "cache") and data.downloaded_bytes:
        how = f"downloaded {output.human_bytes(data.downloaded_bytes)} in {output.human_duration(data.elapsed_s)}"
    con.print(f"[bold]{data.model}@{data.revision}[/]: {data.files} files, "
              f"{output.human_bytes(data.bytes)}; {how}")
    con.print(str(data.path), soft_wrap=True)
