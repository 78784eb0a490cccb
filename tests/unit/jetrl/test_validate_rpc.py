"""The pure parts of gRPC trust: request field checks, the gRPC settings, and when a bind is exposed."""

from __future__ import annotations

import math

import pytest
from pydantic import ValidationError

from jetrl import validate_rpc as valid
from jetrl.config import Settings
from jetrl.rpc_security import ClientCredentials, ServerSecurity, is_loopback


@pytest.mark.parametrize("bad", ["", "a.b", "a/b", "/tmp/run", "..", "a\\b", "a\x00", "a b", "a*", "r" * 129])
def test_a_run_id_is_one_path_component_and_subject_token(bad):
    with pytest.raises(valid.InvalidArgument, match="^run_id: "):
        valid.run_id(bad)


def test_good_ids_pass():
    assert valid.run_id("arith-1a2b3c4d") == "arith-1a2b3c4d"
    assert valid.dotted_id("run1.g000001.3", "sample_id") == "run1.g000001.3"


@pytest.mark.parametrize("bad", ["", "run..g1", ".run", "run.", "run/../x.g1", "run.g1\x00", "r." + "g" * 200])
def test_a_dotted_id_is_run_id_parts_joined_by_single_dots(bad):
    with pytest.raises(valid.InvalidArgument, match="^group_id: "):
        valid.dotted_id(bad, "group_id")


@pytest.mark.parametrize("bad", ["../x", "a/b", ".", "..", "a\x00", "x" * 256])
def test_a_file_name_has_no_directory(bad):
    with pytest.raises(valid.InvalidArgument, match="^file: "):
        valid.file_name(bad, "file")


def test_numbers_are_finite_and_in_range():
    assert valid.number(0.5, "top_p", 0, 1, low_open=True) == 0.5
    for bad in (math.nan, math.inf, -0.1, 1.5, 0.0):
        with pytest.raises(valid.InvalidArgument, match="^top_p: "):
            valid.number(bad, "top_p", 0, 1, low_open=True)
    with pytest.raises(valid.InvalidArgument, match=r"^limit: -1 is not in \[0, 10\]"):
        valid.integer(-1, "limit", 0, 10)


def test_text_is_bounded_and_has_no_nul():
    assert valid.text("ok", "reason", 10) == "ok"
    with pytest.raises(valid.InvalidArgument, match="NUL"):
        valid.text("a\x00", "reason", 10)
    with pytest.raises(valid.InvalidArgument, match="longer than 10"):
        valid.text("a" * 11, "reason", 10)


def test_a_bind_beyond_loopback_without_a_token_is_reported():
    assert is_loopback("127.0.0.1:50051") and is_loopback("[::1]:1") and is_loopback("localhost:1")
    assert not is_loopback("0.0.0.0:50051") and not is_loopback("[::]:1") and not is_loopback("scheduler:1")
    open_server = ServerSecurity()
    assert open_server.exposure("127.0.0.1:50051") is None
    assert "JETRL_GRPC_TOKEN" in (open_server.exposure("0.0.0.0:50051") or "")
    assert ServerSecurity(token="t" * 16).exposure("0.0.0.0:50051") is None


def test_grpc_settings_refuse_without_echoing_a_credential(tmp_path):
    assert Settings(grpc_token="").grpc_token is None  # compose's `${JETRL_GRPC_TOKEN:-}`
    with pytest.raises(ValidationError) as err:
        Settings(grpc_token="short-secret")
    assert "short-secret" not in str(err.value)
    with pytest.raises(ValidationError, match="grpc_tls_cert and grpc_tls_key together"):
        Settings(grpc_tls_cert=tmp_path / "cert.pem")
    assert "stack-token-0123456789" not in repr(Settings(grpc_token="stack-token-0123456789"))


def test_credentials_read_their_files_and_pick_the_token(tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_bytes(b"PEM")
    settings = Settings(grpc_token="s" * 16, grpc_reward_token="r" * 16, grpc_tls_ca=ca)
    assert ClientCredentials.of(settings) == ClientCredentials(b"PEM", "s" * 16)
    assert ClientCredentials.of(settings, reward=True) == ClientCredentials(b"PEM", "r" * 16)
    assert ServerSecurity.of(settings, reward=True).token_setting == "JETRL_GRPC_REWARD_TOKEN"
    assert "s" * 16 not in repr(ClientCredentials.of(settings)) + repr(ServerSecurity.of(settings))
    with pytest.raises(ValueError, match="JETRL_GRPC_TLS_CA: cannot read"):
        ClientCredentials.of(Settings(grpc_tls_ca=tmp_path / "missing.pem"))
