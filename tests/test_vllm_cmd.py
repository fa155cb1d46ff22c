"""The vLLM command line: option names as vLLM reads them, and the command as shown."""

from __future__ import annotations

import pytest

from bootstrap.core.vllm_args import without_api_keys
from bootstrap.core.vllm_cmd import option_name, redact


def test_option_name_rewrites_underscores_in_long_option_names_only():
    assert option_name("--gpu_memory_utilization") == "--gpu-memory-utilization"
    assert option_name("--served_model_name=my_model") == "--served-model-name"
    assert option_name("--compilation_config.cudagraph_mode=x") == "--compilation-config.cudagraph_mode"
    assert option_name("-tp=2") == "-tp"
    assert option_name("my_model") == "my_model"


def test_redact_masks_the_api_key_in_every_spelling():
    argv = ["vllm", "serve", "m", "--api-key", "k1", "--api-key=k2", "--api_key", "k3", "--api_key=k4",
            "--served_model_name", "a_b"]
    assert redact(argv) == ["vllm", "serve", "m", "--api-key", "***", "--api-key=***", "--api_key", "***",
                            "--api_key=***", "--served_model_name", "a_b"]


def test_redact_leaves_a_trailing_api_key_flag_alone():
    assert redact(["vllm", "--api-key"]) == ["vllm", "--api-key"]


def test_redact_masks_every_key_of_a_multi_key_api_key():
    assert redact(["vllm", "--api-key", "k1", "k2", "--port", "1"]) == [
        "vllm", "--api-key", "***", "***", "--port", "1"]


def test_redact_masks_a_shortened_api_key_option():
    assert redact(["vllm", "--api-k", "k1", "--api_k=k2"]) == ["vllm", "--api-k", "***", "--api_k=***"]


def test_redact_masks_a_key_that_starts_with_a_dash():
    assert redact(["vllm", "--api-key", "-k1", "--port", "1"]) == ["vllm", "--api-key", "***", "--port", "1"]


def test_without_api_keys_drops_every_spelling_and_every_key_redact_masks():
    argv = ["--enforce-eager", "--api-key", "k1", "k2", "--api-key=k3", "--api_key", "k4", "--api-k=k5",
            "--api_k", "-k6", "--max-num-seqs", "8", "--", "--api-key", "k7"]
    assert without_api_keys(argv) == ["--enforce-eager", "--max-num-seqs", "8", "--"]
    assert not any(k in " ".join(without_api_keys(argv)) for k in ("k1", "k2", "k3", "k4", "k5", "k6", "k7"))


def test_without_api_keys_leaves_a_command_without_a_key_as_it_is():
    argv = ["--api-server-count", "2", "--served-model-name", "api-key"]
    assert without_api_keys(argv) == argv


def _settings(profile_text: str, extra=()):
    from bootstrap.core.environ import Environ
    from bootstrap.core.profiles import parse_profile, resolve_serve_settings

    return resolve_serve_settings(parse_profile(profile_text, "p"), Environ({"HOME": "/h"}), extra_args=extra)


@pytest.mark.parametrize("connector", ["NixlConnector", 'Evil","kv_role":"kv_producer', "back\\slash"])
def test_serve_passes_the_profiles_kv_connector_to_vllm_as_json(connector):
    """serve.kv_connector was honoured by `export k8s` but ignored by `serve` (issue 17, item 19): it becomes
    --kv-transfer-config, a JSON document made by a JSON encoder, so a hostile name stays one string."""
    import json

    from bootstrap.core.vllm_cmd import VllmInstall, build_command

    text = f'[model]\nid = "a/b"\n[serve]\nkv_connector = {json.dumps(connector)}\n'
    argv = build_command(VllmInstall("/py", "vllm", "0.32.0"), "/m", _settings(text), "gpu")
    value = argv[argv.index("--kv-transfer-config") + 1]
    assert json.loads(value) == {"kv_connector": connector, "kv_role": "kv_both"}


def test_a_kv_transfer_config_among_the_arguments_wins_over_the_profiles_connector():
    from bootstrap.core.vllm_cmd import VllmInstall, build_command

    text = '[model]\nid = "a/b"\n[serve]\nkv_connector = "NixlConnector"\n'
    argv = build_command(VllmInstall("/py", "vllm", "0.32.0"), "/m",
                         _settings(text, ("--kv-transfer-config", '{"kv_connector":"Mine"}')), "gpu")
    assert argv.count("--kv-transfer-config") == 1 and argv[-1] == '{"kv_connector":"Mine"}'


def test_no_api_key_spelling_reaches_the_command_line():
    from bootstrap.core.vllm_cmd import VllmInstall, build_command

    text = '[model]\nid = "a/b"\n[serve]\nargs = ["--api-key=p1", "--max-num-seqs", "4"]\n'
    for extra in (("--api_key", "k2"), ("--api-k", "k3"), ("--api-key=k4",)):
        settings = _settings(text, extra)
        argv = build_command(VllmInstall("/py", "vllm", "0.32.0"), "/m", settings, "gpu")
        assert not any(k in " ".join(argv) for k in ("p1", "k2", "k3", "k4", "--api")), argv
        assert settings.api_key in ("k2", "k3", "k4") and "--max-num-seqs" in argv
