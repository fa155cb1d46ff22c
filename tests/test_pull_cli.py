"""`vboot pull` on a local profile: sizes from one walk, no pull machinery loaded (the real CLI in a subprocess)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.support.e2e import REPO

# Runs the CLI in a fresh interpreter and reports, after its exit, whether core.pull was imported.
SCRIPT = """
import sys
from bootstrap.cli.entry import main
sys.argv = ["vboot", "pull", sys.argv[1], "--json"]
try:
    main()
except SystemExit as exc:
    code = exc.code
sys.stderr.write("IMPORTED_PULL=%s CODE=%s" % ("bootstrap.core.pull" in sys.modules, code))
"""


def test_a_local_profile_reports_the_directory_without_loading_the_pull_machinery(isolated_env, tmp_path):
    model = tmp_path / "model"
    (model / "sub").mkdir(parents=True)
    (model / "config.json").write_bytes(b"x" * 10)
    (model / "sub" / "weights.bin").write_bytes(b"y" * 300)
    (model / "link.bin").symlink_to(model / "sub" / "weights.bin")  # counted as its target, like `du -L`
    profile = tmp_path / "local.toml"
    profile.write_text(f'description = "a local model"\n[model]\nid = "me/local"\nsource = "local"\npath = "{model}"\n')
    env = {**isolated_env, "PYTHONPATH": os.pathsep.join([str(REPO), isolated_env.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(profile)], capture_output=True, text=True, env=env,
                          timeout=60)
    data = json.loads(proc.stdout)["data"]
    assert (data["source"], data["files"], data["bytes"]) == ("local", 3, 610)
    assert "IMPORTED_PULL=False CODE=0" in proc.stderr, proc.stderr


def test_the_cache_root_follows_flag_then_profile_then_environment(tmp_path):
    from bootstrap.cli.pull import _resolve
    from bootstrap.core.environ import Environ
    from bootstrap.core.paths import modelscope_cache_source

    env = Environ({"HOME": str(tmp_path / "home"), "MS_CACHE_HOME": str(tmp_path / "legacy")})
    assert modelscope_cache_source(env) == (tmp_path / "legacy", "MS_CACHE_HOME")
    assert _resolve("acme/demo", None, None, env)[1:3] == ("master", tmp_path / "legacy")
    assert _resolve("acme/demo", "v1", tmp_path / "flag", env)[1:3] == ("v1", tmp_path / "flag")
    profile = tmp_path / "p.toml"
    profile.write_text(f'description = "d"\ncache_dir = "{tmp_path / "prof"}"\n[model]\nid = "acme/demo"\n')
    assert _resolve(str(profile), None, None, env)[2] == tmp_path / "prof"
    assert _resolve(str(profile), None, tmp_path / "flag", env)[2] == tmp_path / "flag"
