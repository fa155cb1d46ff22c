"""The vLLM command line: option names as vLLM reads them, and the command as shown."""

from __future__ import annotations

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
    assert redact(["vllm", "--api-key", "k1", "k2", "--port", "1"]) == ["vllm", "--api-key", "***", "***", "--port", "1"]


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
