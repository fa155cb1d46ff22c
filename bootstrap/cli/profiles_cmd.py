"""`vboot profiles`: list the profiles vboot can serve."""

from __future__ import annotations

import click

from bootstrap.cli import output
from bootstrap.core.envelope import CommandResult
from bootstrap.core.environ import Environ
from bootstrap.core.errors import VbootError
from bootstrap.core.paths import user_profiles_dir
from bootstrap.core.profiles import list_profiles, load_profile, resolve_serve_settings, shown
from bootstrap.core.reports.profiles import ProfileListing, ProfileRow, ProfileShown


@click.command()
@click.argument("name", required=False)
@output.json_option
def profiles(name: str | None, as_json: bool) -> int:
    """List built-in and user profiles, or show one in full (NAME).

    A profile is a TOML file: [model] id, source (modelscope | huggingface | local), revision, served_name,
    path; [serve] port, host, device (auto | gpu | cpu), max_model_len, gpu_memory_utilization,
    tensor_parallel_size, enable_sleep_mode, kv_connector, dtype, args (extra vLLM arguments); [env] variables
    for the server; [needs] weights, min_free_vram, min_free_disk (e.g. "3.1GB"); [alerts] webhook_url or
    webhook_url_env, slack_webhook_url or slack_webhook_url_env (the name of a variable holding the URL),
    slack_channel, send_resolved; and cache_dir.
    Put your own in $XDG_CONFIG_HOME/vboot/profiles/NAME.toml (default ~/.config/vboot/profiles).
    """
    env = Environ()
    if name:
        prof = shown(load_profile(name, env))  # keys, secret [env] values and receiver URLs masked
        return output.emit(CommandResult("profiles", ProfileShown(prof)), human=_render_one)
    rows: list[ProfileRow] = []
    errors = []
    for ref in list_profiles(env):
        if ref.shadowed:
            rows.append(ProfileRow(ref.name, ref.path, builtin=True, valid=True, shadowed=True))
            continue
        try:  # one broken profile is a row with its error, never the end of the listing
            prof = load_profile(ref.path if not ref.builtin else ref.name, env)
            # the port serve binds without flags: a --port in the profile's serve.args wins, as in vLLM
            port = resolve_serve_settings(prof, env).port
        except VbootError as exc:
            errors.append(exc.to_dict())
            rows.append(ProfileRow(ref.name, ref.path, ref.builtin, valid=False, error=exc.message))
            continue
        rows.append(ProfileRow(ref.name, ref.path, ref.builtin, valid=True, shadowed=False, model=prof.model.id,
                               source=prof.model.source, device=prof.serve.device, port=port,
                               description=prof.description))
    status = "warn" if errors else "ok"
    listing = ProfileListing(tuple(rows), str(user_profiles_dir(env)))
    return output.emit(CommandResult("profiles", listing, status=status, exit_code=0, errors=tuple(errors)),
                       human=_render_list)


def _render_list(data: ProfileListing) -> None:
    table = output.table(("profile", "model", "source", "device", "port", "description"))
    esc = output.escape  # names, ids, descriptions and errors come from profile files: never markup
    for row in data.profiles:
        name = esc(row.name + ("" if row.builtin else " (user)"))
        if not row.valid:
            table.add_row(f"[red]{name}[/]", "[red]invalid[/]", "", "", "", esc(row.error or ""))
        elif row.shadowed:
            table.add_row(f"[dim]{name}[/]", "[dim]hidden by your profile of the same name[/]", "", "", "", "")
        else:
            table.add_row(name, esc(row.model or ""), row.source or "", row.device or "", str(row.port),
                          esc(row.description or ""))
    con = output.console()
    con.print(table)
    con.print(f"[dim]your profiles: {data.user_dir}/NAME.toml[/]")


def _render_one(data: ProfileShown) -> None:
    import json

    from bootstrap.core.envelope import to_jsonable

    output.console().print_json(json.dumps(to_jsonable(data.profile)))
