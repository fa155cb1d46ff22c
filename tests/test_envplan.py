"""The environment a profile implies for vLLM."""

from __future__ import annotations

from pathlib import Path

import pytest

from bootstrap.core.envplan import expandable_conflicts, plan_environment
from bootstrap.core.profiles import parse_profile, vllm_options

BASE = '[model]\nid = "Qwen/Qwen2.5-1.5B-Instruct"\n'


def test_defaults_for_a_modelscope_profile():
    plan = plan_environment(parse_profile(BASE, "p"), Path("/c"), {})
    assert plan.as_dict() == {"PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True", "VLLM_USE_MODELSCOPE": "true",
                              "MODELSCOPE_CACHE": "/c"}
    assert plan.warnings == ()


def test_user_value_wins_over_default_and_profile_wins_over_user():
    prof = parse_profile(BASE + '[env]\nPYTORCH_CUDA_ALLOC_CONF = "max_split_size_mb:128"\n', "p")
    plan = plan_environment(prof, Path("/c"), {"PYTORCH_CUDA_ALLOC_CONF": "garbage_collection_threshold:0.6"})
    v = {x.name: x for x in plan.vars}["PYTORCH_CUDA_ALLOC_CONF"]
    assert v.value == "max_split_size_mb:128" and v.origin == "profile"
    plan = plan_environment(parse_profile(BASE, "p"), Path("/c"), {"PYTORCH_CUDA_ALLOC_CONF": "x:y"})
    assert {x.name: x.origin for x in plan.vars}["PYTORCH_CUDA_ALLOC_CONF"] == "environment"


def test_tensor_parallel_leaves_expandable_segments_out_with_a_warning():
    prof = parse_profile(BASE + "[serve]\ntensor_parallel_size = 2\n", "p")
    plan = plan_environment(prof, Path("/c"), {})
    assert "PYTORCH_CUDA_ALLOC_CONF" not in plan.as_dict()
    assert any("tensor parallel 2" in w for w in plan.warnings)


def test_sleep_mode_via_extra_args_is_detected():
    prof = parse_profile(BASE + '[serve]\nargs = ["--enable-sleep-mode"]\n', "p")
    assert "PYTORCH_CUDA_ALLOC_CONF" not in plan_environment(prof, Path("/c"), {}).as_dict()


@pytest.mark.parametrize("args", [["--enable_sleep_mode"], ["--kv_transfer_config", '{"kv_connector":"X"}'],
                                  ["--kv_transfer_config.kv_connector=X"]])
def test_sleep_mode_or_kv_connector_spelt_with_underscores_leaves_expandable_segments_out(args):
    prof = parse_profile(BASE, "p")
    plan = plan_environment(prof, Path("/c"), {}, vllm_options(prof.serve, args))
    assert "PYTORCH_CUDA_ALLOC_CONF" not in plan.as_dict()


def test_user_expandable_with_kv_connector_warns():
    prof = parse_profile(BASE + '[serve]\nkv_connector = "NixlConnector"\n', "p")
    plan = plan_environment(prof, Path("/c"), {"PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True"})
    assert any("KV connector" in w for w in plan.warnings)


def test_local_profile_sets_no_modelscope_variables():
    prof = parse_profile('[model]\nid = "a/b"\nsource = "local"\npath = "/m"\n', "p")
    assert "VLLM_USE_MODELSCOPE" not in plan_environment(prof, Path("/c"), {}).as_dict()


@pytest.mark.parametrize("flag, n", [("--tensor-parallel-size", "4"), ("--tensor_parallel_size", "2")])
def test_tensor_parallel_in_serve_extra_args_leaves_expandable_segments_out(flag, n):
    prof = parse_profile(BASE, "p")
    plan = plan_environment(prof, Path("/c"), {}, vllm_options(prof.serve, (flag, n)))
    assert "PYTORCH_CUDA_ALLOC_CONF" not in plan.as_dict()
    assert any(f"tensor parallel {n}" in w for w in plan.warnings)


def test_tensor_parallel_size_reads_every_spelling():
    prof = parse_profile(BASE + '[serve]\nargs = ["-tp", "2"]\n', "p")
    assert vllm_options(prof.serve).tensor_parallel_size == 2
    assert vllm_options(prof.serve, ("--tensor-parallel-size=8",)).tensor_parallel_size == 8
    assert vllm_options(parse_profile(BASE, "p").serve).tensor_parallel_size == 1


def test_effective_options_take_the_last_argument_over_the_profile():
    prof = parse_profile(BASE + '[serve]\ngpu_memory_utilization = 0.5\nmax_model_len = 4096\n'
                                'args = ["--max-model-len", "2048"]\n', "p")
    opts = vllm_options(prof.serve, ("--gpu-memory-utilization=0.3", "--enable-sleep-mode"))
    assert (opts.gpu_memory_utilization, opts.max_model_len, opts.enable_sleep_mode) == (0.3, 2048, True)
    assert vllm_options(parse_profile(BASE, "p").serve).gpu_memory_utilization == 0.9  # vLLM's default
    assert vllm_options(prof.serve, ("--gpu-memory-utilization", "lots")).gpu_memory_utilization == 0.5


def test_last_flag_value_reads_every_spelling_and_keeps_the_last():
    from bootstrap.core.vllm_args import last_flag_value

    assert last_flag_value(["--tensor-parallel-size", "2"], "--tensor-parallel-size", "-tp") == "2"
    assert last_flag_value(["--tensor-parallel-size=2"], "--tensor-parallel-size", "-tp") == "2"
    assert last_flag_value(["-tp", "4"], "--tensor-parallel-size", "-tp") == "4"
    assert last_flag_value(["-tp=4"], "--tensor-parallel-size", "-tp") == "4"
    assert last_flag_value(["-tp", "4", "--max-num-seqs", "8", "--tensor-parallel-size=2"],
                           "--tensor-parallel-size", "-tp") == "2"
    assert last_flag_value(["--max-num-seqs", "8"], "--tensor-parallel-size", "-tp") is None
    assert last_flag_value(["--tensor-parallel-size-x", "3"], "--tensor-parallel-size") is None


def test_last_flag_value_reads_underscore_spellings_as_vllm_does():
    from bootstrap.core.vllm_args import last_flag_value

    # vLLM's FlexibleArgumentParser turns --a_b into --a-b before argparse sees it.
    assert last_flag_value(["--tensor_parallel_size", "2"], "--tensor-parallel-size", "-tp") == "2"
    assert last_flag_value(["--tensor_parallel_size=2"], "--tensor-parallel-size", "-tp") == "2"
    assert last_flag_value(["--tensor-parallel_size=3"], "--tensor-parallel-size", "-tp") == "3"
    assert last_flag_value(["--tensor-parallel-size", "2", "--tensor_parallel_size", "4"],
                           "--tensor-parallel-size", "-tp") == "4"


def test_last_flag_value_leaves_values_and_dotted_keys_as_given():
    from bootstrap.core.vllm_args import last_flag_value

    assert last_flag_value(["--served_model_name=my_model"], "--served-model-name") == "my_model"
    assert last_flag_value(["--served_model_name", "my_model"], "--served-model-name") == "my_model"
    # Only the part before the first '.' is rewritten: --compilation_config.cudagraph_mode is
    # --compilation-config.cudagraph_mode, which is neither spelling with dashes after the dot.
    assert last_flag_value(["--compilation_config.cudagraph_mode=x"], "--compilation-config.cudagraph_mode") == "x"
    assert last_flag_value(["--compilation_config.cudagraph_mode=x"], "--compilation-config.cudagraph-mode") is None
    assert last_flag_value(["-t_p", "4"], "--tensor-parallel-size", "-tp") is None  # short options are not rewritten


def test_last_flag_value_reads_a_prefix_as_vllms_argparse_does():
    from bootstrap.core.vllm_args import last_flag_value

    # argparse's allow_abbrev (on in vLLM) takes an unambiguous prefix: --tensor-parallel 2 sets the size.
    assert last_flag_value(["--tensor-parallel", "2"], "--tensor-parallel-size", "-tp") == "2"
    assert last_flag_value(["--tensor_parallel=3"], "--tensor-parallel-size", "-tp") == "3"
    assert last_flag_value(["-tp", "4", "--tensor-par", "2"], "--tensor-parallel-size", "-tp") == "2"
    # A dotted key is never shortened.
    assert last_flag_value(["--compilation-config.cudagraph=x"], "--compilation-config.cudagraph_mode") is None


def test_last_flag_value_follows_argparse_on_missing_values_and_a_bare_double_dash():
    from bootstrap.core.vllm_args import last_flag_value

    # An option followed by another option has no value (vLLM refuses to start): nothing to read.
    assert last_flag_value(["--tensor-parallel-size", "--enforce-eager"], "--tensor-parallel-size") is None
    assert last_flag_value(["-tp", "2", "-tp"], "--tensor-parallel-size", "-tp") is None
    # A negative number is a value; after a bare "--" argparse reads only positionals.
    assert last_flag_value(["--gpu-memory-utilization", "-1"], "--gpu-memory-utilization") == "-1"
    assert last_flag_value(["-tp", "2", "--", "-tp", "4"], "--tensor-parallel-size", "-tp") == "2"


def test_prefix_spellings_count_for_tensor_parallel_gpu_memory_and_expandable_segments():

    base = parse_profile(BASE, "p")
    assert vllm_options(base.serve, ("--tensor-parallel", "2")).tensor_parallel_size == 2
    assert vllm_options(base.serve, ("--gpu-memory-util=0.5",)).gpu_memory_utilization == 0.5
    assert any("sleep mode" in r for r in expandable_conflicts(vllm_options(base.serve, ("--enable-sleep",))))
    assert any("KV connector" in r for r in expandable_conflicts(vllm_options(base.serve, ("--kv-transfer", "{}"))))
    options = vllm_options(base.serve, ("--kv_transfer_config.kv_connector=X",))
    assert any("KV connector" in r for r in expandable_conflicts(options))
    assert expandable_conflicts(vllm_options(base.serve, ("--enforce-eager",))) == []


def test_underscore_spellings_count_for_tensor_parallel_and_gpu_memory():

    prof = parse_profile(BASE + '[serve]\nargs = ["--tensor_parallel_size", "2"]\n', "p")
    assert vllm_options(prof.serve).tensor_parallel_size == 2
    assert vllm_options(parse_profile(BASE, "p").serve, ("--tensor_parallel_size=4",)).tensor_parallel_size == 4
    assert vllm_options(parse_profile(BASE, "p").serve,
                        ("--gpu_memory_utilization", "0.5")).gpu_memory_utilization == 0.5
    assert vllm_options(parse_profile(BASE, "p").serve, ("--gpu_memory_utilization=0.6",)).gpu_memory_utilization == 0.6


def test_a_later_tensor_parallel_flag_wins_as_in_vllms_argparse():

    prof = parse_profile(BASE + '[serve]\ntensor_parallel_size = 4\nargs = ["-tp", "2"]\n', "p")
    assert vllm_options(prof.serve).tensor_parallel_size == 2
    assert vllm_options(prof.serve, ("-tp=1",)).tensor_parallel_size == 1


def test_gpu_memory_utilization_from_profile_args_or_extra_args():

    assert vllm_options(parse_profile(BASE, "p").serve).gpu_memory_utilization == 0.9  # vLLM's default
    prof = parse_profile(BASE + "[serve]\ngpu_memory_utilization = 0.8\n", "p")
    assert vllm_options(prof.serve).gpu_memory_utilization == 0.8
    assert vllm_options(prof.serve, ("--gpu-memory-utilization", "0.5")).gpu_memory_utilization == 0.5
    assert vllm_options(prof.serve, ("--gpu-memory-utilization=0.6",)).gpu_memory_utilization == 0.6
    assert vllm_options(prof.serve, ("--gpu-memory-utilization", "lots")).gpu_memory_utilization == 0.8
