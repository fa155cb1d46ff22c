"""Host, port and API key as vLLM's parser decides them from vboot's options and the arguments after them."""

from __future__ import annotations

import re

import pytest

from bootstrap.core.errors import UsageError
from bootstrap.core.vllm_args import UNSUPPORTED_OPTIONS, ArgSource, bound_endpoint, option_name, option_uses

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


# Each option vLLM 0.32 reads that takes the server off plain HTTP on --host/--port, in the spellings its
# FlexibleArgumentParser accepts: as written, "=VALUE", underscores for dashes, an unambiguous prefix.
REFUSED = [
    (("--uds", "/tmp/v.sock"), "--uds"), (("--uds=/tmp/v.sock",), "--uds"), (("--ud", "/tmp/v.sock"), "--ud (--uds)"),
    (("--ssl-keyfile", "k.pem"), "--ssl-keyfile"), (("--ssl-keyfile=k.pem",), "--ssl-keyfile"),
    (("--ssl_keyfile", "k.pem"), "--ssl_keyfile"), (("--ssl_keyfile=k.pem",), "--ssl_keyfile"),
    (("--ssl-key", "k.pem"), "--ssl-key (--ssl-keyfile)"),
    (("--ssl-certfile", "c.pem"), "--ssl-certfile"), (("--ssl_certfile=c.pem",), "--ssl_certfile"),
    (("--ssl-ca-certs", "ca.pem"), "--ssl-ca-certs"), (("--ssl_ca_certs=ca.pem",), "--ssl_ca_certs"),
    (("--ssl-cert-reqs", "2"), "--ssl-cert-reqs"), (("--ssl_cert_reqs=2",), "--ssl_cert_reqs"),
    (("--ssl-ciphers", "ECDHE"), "--ssl-ciphers"), (("--ssl_ciphers=ECDHE",), "--ssl_ciphers"),
    (("--enable-ssl-refresh",), "--enable-ssl-refresh"), (("--enable_ssl_refresh",), "--enable_ssl_refresh"),
    (("--grpc",), "--grpc"), (("--headless",), "--headless"),
]


def test_the_refused_options_are_vllm_032s_ways_off_plain_http_on_host_and_port():
    assert set(UNSUPPORTED_OPTIONS) == {"--uds", "--ssl-keyfile", "--ssl-certfile", "--ssl-ca-certs", "--ssl-cert-reqs",
                                        "--ssl-ciphers", "--enable-ssl-refresh", "--grpc", "--headless"}
    assert {option_name(extra[0].partition("=")[0]) for extra, shown in REFUSED if "(" not in shown} == set(
        UNSUPPORTED_OPTIONS)


@pytest.mark.parametrize("extra, shown", REFUSED)
def test_an_option_off_plain_http_among_the_extra_arguments_is_refused_in_one_line(extra, shown):
    with pytest.raises(UsageError) as exc:
        endpoint("--max-num-seqs", "8", *extra)
    message = exc.value.message
    assert message.startswith(f"{shown} in {EXTRA} is not supported: it ")
    assert "vboot supervises vLLM over plain HTTP on --host/--port" in message and "\n" not in message
    assert exc.value.exit_code == 2 and exc.value.hint == f"drop {shown.partition(' ')[0]} from {EXTRA}"


@pytest.mark.parametrize("extra, shown", REFUSED)
def test_an_option_off_plain_http_in_the_profiles_serve_args_is_refused(extra, shown):
    with pytest.raises(UsageError, match=f"^{re.escape(shown)} in profile p's serve.args is not supported"):
        endpoint(profile_args=("--enforce-eager", *extra))


@pytest.mark.parametrize("extra, says", [
    (("--ssl-keyfile", "k.pem"), "it configures HTTPS, and vboot supervises vLLM over plain HTTP on --host/--port; "
                                 "terminate TLS in a reverse proxy in front of it (or run `vllm serve` yourself)"),
    (("--uds", "/s"), "it makes vLLM listen on a Unix socket instead"),
    (("--grpc",), "it makes vLLM serve gRPC on the port instead"),
    (("--headless",), "it makes vLLM start no API server"),
])
def test_the_refusal_says_why_and_what_to_do_instead(extra, says):
    with pytest.raises(UsageError) as exc:
        endpoint(*extra)
    assert says in exc.value.message


def test_the_first_refused_option_on_the_command_line_is_named():
    with pytest.raises(UsageError, match=r"^--uds in profile p's serve.args"):
        endpoint("--ssl-keyfile", "k.pem", profile_args=("--uds", "/s"))
    with pytest.raises(UsageError, match=r"^--ssl-certfile in "):
        endpoint("--ssl-certfile", "c.pem", "--uds", "/s", "--port", "x")


@pytest.mark.parametrize("extra", [
    ("--root-path", "/api"), ("--root_path=/api",), ("--disable-fastapi-docs",), ("--no-enable-ssl-refresh",),
    ("--grpc-port", "50051"), ("--middleware", "m.app"), ("--", "--uds", "/s"),
])
def test_options_that_leave_plain_http_on_host_and_port_pass(extra):
    """--root-path only makes vLLM also answer the prefixed paths (Starlette's get_route_path): /health stays;
    --grpc-port adds a listener beside HTTP; after a bare -- everything is positional."""
    assert endpoint(*extra, port=8001).port == 8001


def test_option_uses_reads_several_values_only_when_asked():
    [one] = option_uses(["--api-key", "a", "b", "--port", "1"], "--api-key")
    [many] = option_uses(["--api-key", "a", "b", "--port", "1"], "--api-key", many=True)
    assert one.values == ("a",) and many.values == ("a", "b")
