"""Host, port and API key as vLLM's parser decides them from vboot's options and the arguments after them."""

from __future__ import annotations

import pytest

from bootstrap.core.errors import UsageError
from bootstrap.core.vllm_args import ArgSource, bound_endpoint, option_uses

EXTRA = "the vLLM arguments after --"


def endpoint(*extra: str, profile_args: tuple[str, ...] = (), host="127.0.0.1", port=8000, api_key=None):
    return bound_endpoint(host, port, api_key, [ArgSource("profile p's serve.args", profile_args),
                                                ArgSource(EXTRA, extra)])


def test_without_later_arguments_vboots_own_values_stand():
    e = endpoint("--max-num-seqs", "8", host="127.0.0.1", port=8001, api_key="k")
    assert (e.host, e.port, e.api_key, e.origins) == ("127.0.0.1", 8001, "k", {})


@pytest.mark.parametrize("extra", [("--port", "9000"), ("--port=9000",), ("--port", "8001", "--port", "9000"),
                                   ("--por", "9000")])
def test_the_last_port_in_any_spelling_wins(extra):
    e = endpoint(*extra, port=8001)
    assert e.port == 9000 and e.origins == {"port": EXTRA}


def test_the_extra_arguments_come_after_the_profiles_serve_args():
    assert endpoint("--port", "9001", profile_args=("--port", "9000")).port == 9001
    e = endpoint("--max-num-seqs", "8", profile_args=("--host", "0.0.0.0"))
    assert e.host == "0.0.0.0" and e.origins == {"host": "profile p's serve.args"}


@pytest.mark.parametrize("extra", [("--host", "0.0.0.0"), ("--host=0.0.0.0",), ("--hos", "0.0.0.0")])
def test_a_host_among_the_arguments_is_the_one_bound(extra):
    assert endpoint(*extra).host == "0.0.0.0"


@pytest.mark.parametrize("extra", [("--host=",), ("--host", ""), ("--host", "None")])
def test_an_empty_host_means_every_interface(extra):
    """vLLM reads '' and 'None' as no host, and then binds every interface."""
    assert endpoint(*extra).host == "0.0.0.0"


@pytest.mark.parametrize("extra", [("--api-key", "K"), ("--api_key", "K"), ("--api-key=K",), ("--api_key=K",),
                                   ("--api-key", "K", "K2")])
def test_an_api_key_among_the_arguments_counts(extra):
    e = endpoint(*extra)
    assert e.api_key == "K" and e.origins == {"api_key": EXTRA}


def test_an_empty_last_api_key_is_no_key():
    assert endpoint("--api-key=", api_key="vboots").api_key is None


def test_arguments_after_a_bare_double_dash_are_positional():
    assert endpoint("--", "--port", "9000").port == 8000


@pytest.mark.parametrize("extra, message", [
    (("--port", "x"), "--port 'x' in the vLLM arguments after -- is not a port number"),
    (("--port=x",), "--port 'x' in the vLLM arguments after -- is not a port number"),
    (("--port", "0"), "--port 0 in the vLLM arguments after -- is outside 1-65535"),
    (("--port", "70000"), "--port 70000 in the vLLM arguments after -- is outside 1-65535"),
    (("--port", "-1"), "--port -1 in the vLLM arguments after -- is outside 1-65535"),
    (("--port",), "--port in the vLLM arguments after -- has no value"),
    (("--port", "--enforce-eager"), "--port in the vLLM arguments after -- has no value"),
    (("--api-key",), "--api-key in the vLLM arguments after -- has no value"),
])
def test_a_port_or_option_vllm_would_refuse_is_a_usage_error(extra, message):
    with pytest.raises(UsageError) as exc:
        endpoint(*extra)
    assert exc.value.message == message and exc.value.exit_code == 2


def test_a_missing_value_never_echoes_a_key():
    with pytest.raises(UsageError) as exc:
        endpoint("--api-key", "-secret")  # argparse reads "-secret" as an option: vLLM would refuse to start
    assert "secret" not in exc.value.message and "--api-key=VALUE" in exc.value.hint


def test_option_uses_reads_several_values_only_when_asked():
    [one] = option_uses(["--api-key", "a", "b", "--port", "1"], "--api-key")
    [many] = option_uses(["--api-key", "a", "b", "--port", "1"], "--api-key", many=True)
    assert one.values == ("a",) and many.values == ("a", "b")
