"""Known vLLM startup failures are recognised from vLLM's exact messages."""

from __future__ import annotations

from bootstrap.core.diagnosis import diagnose


def test_free_memory_less_than_utilization():
    d = diagnose(["ValueError: Free memory on device (2.1/79.2 GiB) on startup is less than desired GPU memory "
                  "utilization (0.9, 71.3 GiB). Decrease GPU memory utilization or reduce GPU memory used by other "
                  "processes."])
    assert d.code == "gpu_memory_busy" and "2.1 GiB free of 79.2" in d.summary and "vboot stop --orphans" in d.fix


def test_kv_cache_too_small_suggests_the_estimated_length():
    d = diagnose(["ValueError: To serve at least one request with the model's max seq len (131072), 14.00 GiB KV "
                  "cache is needed, which is larger than the available KV cache memory (9.50 GiB). Based on the "
                  "available memory, the estimated maximum model length is 88976. Try increasing "
                  "`gpu_memory_utilization` or decreasing `max_model_len` when initializing the engine."])
    assert d.code == "kv_cache_too_small" and "131072" in d.summary and "88976" in d.fix


def test_address_in_use():
    d = diagnose(["ERROR: [Errno 98] error while attempting to bind on address ('0.0.0.0', 8000): address already in "
                  "use"])
    assert d.code == "address_in_use"


def test_driver_too_old():
    d = diagnose(["RuntimeError: The NVIDIA driver on your system is too old (found version 12080). Please update"])
    assert d.code == "driver_too_old" and "12080" in d.summary


def test_argparse_error():
    d = diagnose(["usage: api_server.py [-h] ...",
                  "api_server.py: error: argument --max-num-seqs: invalid int value: 'x'"])
    assert d.code == "bad_argument" and "--max-num-seqs" in d.summary


def test_the_latest_failure_wins_and_unknown_logs_give_none():
    assert diagnose(["all fine", "still fine"]) is None
    d = diagnose(["address already in use", "CUDA out of memory. Tried to allocate 2.00 GiB"])
    assert d.code == "cuda_oom"


def test_missing_modelscope_in_the_vllm_environment():
    d = diagnose(["ImportError: Please install modelscope>=1.18.1 via `pip install modelscope>=1.18.1` to use "
                  "ModelScope."])
    assert d.code == "modelscope_missing" and "pip install" in d.fix
