"""`vboot pull` on a local profile: sizes from one walk, no pull machinery loaded (the real CLI in a subprocess)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.conftest import REPO

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
