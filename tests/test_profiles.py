"""Profiles: parsing, errors that name file/line/key, built-ins shipped in the wheel, user overrides."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from bootstrap.core.environ import Environ
from bootstrap.core.errors import ProfileError, ProfileNotFoundError, UsageError
from bootstrap.core.profiles import list_profiles, load_profile, local_model_dir, parse_profile, resolve_serve_settings
from tests.support.e2e import REPO

GOOD = """
description = "mine"
[model]
id = "Qwen/Qwen2.5-1.5B-Instruct"
[serve]
port = 8100
args = ["--max-num-seqs", "8"]
[env]
FOO = "bar baz"
[needs]
weights = "3.1GB"
min_free_vram = "6GiB"
"""


def test_good_profile_parses_with_defaults():
    p = parse_profile(GOOD, "mine", "/x/mine.toml")
    assert p.model.source == "modelscope" and p.model.revision == "master" and p.model.served == p.model.id
    assert p.serve.port == 8100 and p.serve.args == ("--max-num-seqs", "8") and p.env == {"FOO": "bar baz"}
    assert p.needs.weights_bytes == 3_100_000_000 and p.needs.min_free_vram_bytes == 6 * 1024**3
    assert p.needs.min_free_disk_bytes == 3_100_000_000  # defaults to the weights


def test_unknown_key_names_file_line_and_key():
    text = '[model]\nid = "a/b"\n\n[serve]\nprot = 8000\n'
    with pytest.raises(ProfileError) as e:
        parse_profile(text, "bad", "/p/bad.toml")
    assert "/p/bad.toml:5" in e.value.message and "serve.prot" in e.value.message


def test_wrong_type_names_the_key():
    with pytest.raises(ProfileError, match="'serve.port' must be a integer"):
        parse_profile('[model]\nid = "a/b"\n[serve]\nport = "8000"\n', "bad", "bad.toml")


def test_toml_syntax_error_names_the_file_and_line():
    with pytest.raises(ProfileError, match=r"bad.toml: not valid TOML: .*line 2"):
        parse_profile('[model]\nid = \n', "bad", "bad.toml")


@pytest.mark.parametrize("text,needle", [
    ('description = "x"\n', "missing [model]"),
    ('[model]\nid = "a/b"\nsource = "s3"\n', "model.source"),
    ('[model]\nid = "a/b"\nsource = "local"\n', "model.path"),
    ('[model]\nid = "a/b"\n[serve]\ngpu_memory_utilization = 1.5\n', "gpu_memory_utilization"),
    ('[model]\nid = "a/b"\n[needs]\nweights = "lots"\n', "needs.weights"),
    ('[model]\nid = "a/b"\n[env]\n"BAD-NAME" = "1"\n', "not a valid environment variable"),
])
def test_invalid_values_are_rejected(text, needle):
    with pytest.raises(ProfileError, match=needle.replace("[", r"\[")):
        parse_profile(text, "bad", "bad.toml")


def test_builtins_exist_and_parse():
    env = Environ({"HOME": "/nonexistent"})
    names = {r.name for r in list_profiles(env)}
    assert {"qwen", "qwen-0.5b", "qwen-7b", "tiny"} <= names
    assert load_profile("qwen", env).model.id == "Qwen/Qwen2.5-1.5B-Instruct"
    tiny = load_profile("tiny", env)
    assert (local_model_dir(tiny) / "model.safetensors").is_file()


def test_user_profile_overrides_builtin(tmp_path):
    d = tmp_path / "cfg" / "vboot" / "profiles"
    d.mkdir(parents=True)
    (d / "qwen.toml").write_text('[model]\nid = "me/mine"\n')
    env = Environ({"HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path / "cfg")})
    assert load_profile("qwen", env).model.id == "me/mine"
    shadowed = [r for r in list_profiles(env) if r.name == "qwen" and r.builtin]
    assert shadowed and shadowed[0].shadowed


def test_unknown_profile_lists_known_ones():
    with pytest.raises(ProfileNotFoundError, match="known: .*qwen"):
        load_profile("nope", Environ({"HOME": "/nonexistent"}))


def test_precedence_flags_over_profile_over_environment():
    prof = parse_profile(GOOD, "mine")
    env = Environ({"HOME": "/h", "MODELSCOPE_CACHE": "/env-cache", "VBOOT_VLLM_PYTHON": "/env/python"})
    s = resolve_serve_settings(prof, env)
    assert s.port == 8100 and str(s.cache_dir) == "/env-cache"
    s = resolve_serve_settings(prof, env, port=9000, cache_dir="/flag", vllm_python="/flag/python")
    assert s.port == 9000 and str(s.cache_dir) == "/flag" and s.vllm_python == "/flag/python"


def test_a_cache_set_in_the_profiles_env_is_where_the_model_is_pulled():
    # vLLM and the ModelScope client get the profile's [env] over the user's; the pull must land there too.
    prof = parse_profile(GOOD.replace("[env]\n", '[env]\nMODELSCOPE_CACHE = "~/models"\n'), "mine")
    env = Environ({"HOME": "/h", "MODELSCOPE_CACHE": "/env-cache"})
    assert str(resolve_serve_settings(prof, env).cache_dir) == "/h/models"
    assert str(resolve_serve_settings(prof, env, cache_dir="/flag").cache_dir) == "/flag"
    legacy = parse_profile(GOOD.replace("[env]\n", '[env]\nMS_CACHE_HOME = "/legacy"\n'), "mine")
    assert str(resolve_serve_settings(legacy, Environ({"HOME": "/h"})).cache_dir) == "/legacy"
    # the user's MODELSCOPE_CACHE still beats a legacy name, in the client as here
    assert str(resolve_serve_settings(legacy, env).cache_dir) == "/env-cache"


def test_host_port_and_key_follow_the_vllm_arguments_that_come_after_vboots_own():
    """build_command puts --host/--port/--api-key first, then serve.args, then the extra args: vLLM keeps the last."""
    prof = parse_profile(GOOD.replace('args = ["--max-num-seqs", "8"]', 'args = ["--port", "8200", "--host", "::"]'),
                         "mine")
    env = Environ({"HOME": "/h"})
    s = resolve_serve_settings(prof, env, port=9000, host="127.0.0.1")
    assert (s.host, s.port) == ("::", 8200) and s.from_args.keys() == {"host", "port"}
    s = resolve_serve_settings(prof, env, port=9000, extra_args=("--port=9100", "--api_key", "K"))
    assert (s.port, s.api_key) == (9100, "K")
    assert s.from_args["port"] == "the vLLM arguments after --"
    assert s.change_hint("port", "--port") == "change the --port in the vLLM arguments after --"


def test_a_bad_port_in_serve_args_is_refused_like_a_bad_serve_port():
    text = GOOD.replace('"--max-num-seqs", "8"', '"--port", "http"')
    with pytest.raises(ProfileError, match=r"^/p/mine.toml:\d+: --port 'http' in 'serve.args' is not a port number"):
        parse_profile(text, "mine", source="/p/mine.toml")


def test_a_bad_port_among_the_extra_arguments_is_a_usage_error():
    with pytest.raises(UsageError, match="--port 'x' in the vLLM arguments after -- is not a port number"):
        resolve_serve_settings(parse_profile(GOOD, "mine"), Environ({"HOME": "/h"}), extra_args=("--port", "x"))


@pytest.mark.parametrize("args, shown", [('"--ssl-keyfile", "k.pem"', "--ssl-keyfile"),
                                         ('"--ssl_certfile=c.pem"', "--ssl_certfile"), ('"--uds", "/s"', "--uds"),
                                         ('"--uds=/s"', "--uds")])
def test_an_option_off_plain_http_in_serve_args_is_refused_when_the_profile_is_read(args, shown):
    """Every command that reads the profile (serve, doctor, export k8s) refuses it alike."""
    text = GOOD.replace('"--max-num-seqs", "8"', args)
    with pytest.raises(ProfileError, match=rf"^/p/mine.toml:\d+: {shown} in 'serve.args' is not supported: it ") as exc:
        parse_profile(text, "mine", source="/p/mine.toml")
    assert exc.value.exit_code == 2


@pytest.mark.parametrize("extra", [("--ssl-keyfile", "k.pem"), ("--ssl_keyfile=k.pem",), ("--uds", "/s"),
                                   ("--uds=/s",)])
def test_an_option_off_plain_http_among_the_extra_arguments_is_a_usage_error(extra):
    with pytest.raises(UsageError, match=r"in the vLLM arguments after -- is not supported: it "):
        resolve_serve_settings(parse_profile(GOOD, "mine"), Environ({"HOME": "/h"}), extra_args=extra)


def test_the_vllm_python_from_the_environment_is_reported_as_such():
    """Settings carry only --vllm-python; choose_python reads $VBOOT_VLLM_PYTHON and names the origin."""
    from bootstrap.core.vllm_env import PythonChoice, choose_python

    env = Environ({"HOME": "/h", "VBOOT_VLLM_PYTHON": "/env/python"})
    s = resolve_serve_settings(parse_profile(GOOD, "mine"), env)
    assert s.vllm_python is None
    assert choose_python(env, s.vllm_python) == PythonChoice("/env/python", "environment")
    s = resolve_serve_settings(parse_profile(GOOD, "mine"), env, vllm_python="/flag/python")
    assert choose_python(env, s.vllm_python) == PythonChoice("/flag/python", "flag")


def test_profiles_and_tiny_model_ship_inside_the_wheel(tmp_path):
    """A profile found only in a checkout does not count: build the wheel and look inside."""
    res = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(REPO)],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    [wheel] = tmp_path.glob("vboot-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for prof in ("qwen", "qwen-0.5b", "qwen-7b", "tiny"):
        assert f"bootstrap/profiles/{prof}.toml" in names
    assert "bootstrap/assets/tiny-qwen2/model.safetensors" in names
    assert "bootstrap/assets/tiny-qwen2/tokenizer.json" in names


def test_profiles_lists_the_port_serve_would_bind(run_vboot, isolated_env):
    import json

    d = Path(isolated_env["XDG_CONFIG_HOME"]) / "vboot" / "profiles"
    d.mkdir(parents=True)
    (d / "mine.toml").write_text('[model]\nid = "Qwen/Qwen2.5-1.5B-Instruct"\n[serve]\nport = 8100\n'
                                 'args = ["--port=8200"]\n')
    res = run_vboot("profiles", "--json")
    rows = {r["name"]: r for r in json.loads(res.stdout)["data"]["profiles"]}
    assert rows["mine"]["port"] == 8200 and rows["qwen"]["port"] == 8000


# --- [alerts] -----------------------------------------------------------------------------------------------------

ALERTS_BASE = '[model]\nid = "Qwen/Qwen2.5-1.5B-Instruct"\n\n[alerts]\n'


def test_alerts_table_with_receivers_from_environment_variables():
    from bootstrap.core.profiles import AlertsSpec

    prof = parse_profile(ALERTS_BASE + 'webhook_url_env = "MY_HOOK"\nslack_webhook_url_env = "SLACK_URL"\n'
                         'slack_channel = "#vllm-alerts"\nsend_resolved = false\n', name="a")
    assert prof.alerts == AlertsSpec(webhook_url_env="MY_HOOK", slack_webhook_url_env="SLACK_URL",
                                     slack_channel="#vllm-alerts", send_resolved=False)
    assert prof.alerts.webhook and prof.alerts.slack


def test_no_alerts_table_means_none():
    assert parse_profile('[model]\nid = "a/x"\n', name="a").alerts is None


@pytest.mark.parametrize("body, line, words", [
    ('webhook_url = "ftp://h/x"\n', 5, "'alerts.webhook_url' is not an http:// or https:// URL"),
    ('webhook_url = "http://h/a b"\n', 5, "'alerts.webhook_url' contains whitespace"),
    ('webhook_url_env = "1BAD"\n', 5, "'alerts.webhook_url_env' must name an environment variable"),
    ('webhook_url = "http://h/x"\nwebhook_url_env = "H"\n', 6, "not both"),
    ('slack_webhook_url_env = "S"\nslack_channel = "#{{ .X }}"\n', 6, "'alerts.slack_channel' must be"),
    ('webhook_url_env = "H"\nslack_channel = "#x"\n', 6, "needs slack_webhook_url"),
    ('webhook_url_env = "H"\nbogus = 1\n', 6, "unknown key 'alerts.bogus'"),
    ('webhook_url_env = ""\n', 5, "'alerts.webhook_url_env' must be a non-empty string"),
    ('webhook_url_env = "H"\nsend_resolved = "yes"\n', 6, "'alerts.send_resolved' must be true or false"),
    ('send_resolved = true\n', 4, "[alerts] needs a receiver"),
])
def test_bad_alerts_tables_name_the_file_line_and_key(body, line, words):
    with pytest.raises(ProfileError) as err:
        parse_profile(ALERTS_BASE + body, name="a", source="/etc/p/a.toml")
    assert err.value.message.startswith(f"/etc/p/a.toml:{line}: ")
    assert words in err.value.message


def test_a_bad_literal_url_is_reported_without_quoting_it():
    with pytest.raises(ProfileError) as err:
        parse_profile(ALERTS_BASE + 'webhook_url = "gopher://secret-token@h"\n', name="a")
    assert "secret-token" not in err.value.message


def test_profiles_show_masks_receiver_urls_written_in_the_profile(run_vboot, isolated_env):
    import json

    d = Path(isolated_env["XDG_CONFIG_HOME"]) / "vboot" / "profiles"
    d.mkdir(parents=True)
    (d / "al.toml").write_text(ALERTS_BASE + 'webhook_url = "https://h.example/hook/t0kenvalue"\n'
                               'slack_webhook_url_env = "SLACK_URL"\n')
    for args in (("profiles", "al"), ("profiles", "al", "--json")):
        proc = run_vboot(*args)
        assert proc.returncode == 0, proc.stderr
        assert "t0kenvalue" not in proc.stdout + proc.stderr
    alerts = json.loads(run_vboot("profiles", "al", "--json").stdout)["data"]["profile"]["alerts"]
    assert alerts["webhook_url"] == "***" and alerts["slack_webhook_url_env"] == "SLACK_URL"


def test_profiles_name_masks_keys_in_serve_args_secret_env_values_and_receiver_urls(run_vboot, isolated_env):
    import json
    from pathlib import Path

    d = Path(isolated_env["XDG_CONFIG_HOME"]) / "vboot" / "profiles"
    d.mkdir(parents=True)
    (d / "leak.toml").write_text('[model]\nid = "a/b"\n[serve]\nargs = ["--api-key", "s3cretkey", "--api_key=k2y"]\n'
                                 '[env]\nHF_TOKEN = "hf_t0ken_value"\nPLAIN = "shown"\n'
                                 '[alerts]\nwebhook_url = "https://hooks.example/t0k3n"\n')
    for args in (("profiles", "leak", "--json"), ("profiles", "leak")):
        res = run_vboot(*args)
        assert res.returncode == 0, res.stderr
        for secret in ("s3cretkey", "k2y", "hf_t0ken_value", "t0k3n"):
            assert secret not in res.stdout + res.stderr, (args, secret)
    data = json.loads(run_vboot("profiles", "leak", "--json").stdout)["data"]["profile"]
    assert data["env"]["PLAIN"] == "shown" and data["serve"]["args"][0] == "--api-key"


def test_what_chose_the_model_cache_is_recorded_once_with_its_variable():
    from bootstrap.core.profiles import CacheOrigin, CacheSource

    text = '[model]\nid = "Qwen/Qwen2.5-0.5B-Instruct"\n'
    plain, with_env = parse_profile(text, "p"), parse_profile(text + '[env]\nMS_CACHE_HOME = "/old"\n', "p")
    home = {"HOME": "/home/u"}

    def origin(profile, env, **kw):
        return resolve_serve_settings(profile, Environ({**home, **env}), **kw).cache_from

    assert origin(plain, {}, cache_dir="/c") == CacheOrigin(CacheSource.FLAG)
    assert origin(plain, {}) == CacheOrigin(CacheSource.DEFAULT) and str(origin(plain, {})) == "default"
    assert origin(plain, {"MODELSCOPE_CACHE": "/m"}) == CacheOrigin(CacheSource.ENV, "MODELSCOPE_CACHE")
    assert str(origin(with_env, {})) == "profile_env:MS_CACHE_HOME"
