"""IMDSClient against the fault-injecting IMDS: documents, faults, token life cycle, IMDSv1 fallback."""

from __future__ import annotations

import datetime as dt
import socket

import pytest

from nodewatch.clock import ManualClock
from nodewatch.imds import IMDSClient, IMDSError, IMDSErrorKind, InterruptionNotice, RebalanceRecommendation
from tests.support.faulty_imds import (
    INSTANCE_ACTION_PATH,
    REBALANCE_PATH,
    TOKEN_PATH,
    FaultyIMDS,
    Garbage,
    Hangup,
    IMDSMode,
    Slow,
    Status,
)
from tests.unit.nodewatch.conftest import MakeClient

NOTICE = dt.datetime(2025, 1, 15, 10, 0, tzinfo=dt.UTC)


def test_reads_both_notices_with_a_session_token(imds: FaultyIMDS, make_client: MakeClient) -> None:
    imds.set_rebalance("2025-01-15T10:00:00Z")
    imds.set_interruption("terminate", "2025-01-15T10:02:00Z")
    client = make_client()

    assert client.rebalance_recommendation() == RebalanceRecommendation(notice_time=NOTICE)
    assert client.interruption_notice() == InterruptionNotice(action="terminate", time=NOTICE.replace(minute=2))
    puts = [seen for seen in imds.requests if seen.method == "PUT"]
    gets = [seen for seen in imds.requests if seen.method == "GET"]
    assert [put.ttl_header for put in puts] == ["21600"]
    assert len(gets) == 2
    assert all(get.token is not None and get.status == 200 for get in gets)


def test_absent_notices_read_as_none(imds: FaultyIMDS, make_client: MakeClient) -> None:
    client = make_client()
    assert client.rebalance_recommendation() is None
    assert client.interruption_notice() is None


def test_reads_instance_identity(imds: FaultyIMDS, make_client: MakeClient) -> None:
    client = make_client()
    assert client.instance_id() == "i-0123456789abcdef0"
    assert client.availability_zone() == "us-east-1a"


@pytest.mark.parametrize(
    ("path", "body"),
    [
        (REBALANCE_PATH, b'{"noticeTime": "2025-01-15T1'),
        (REBALANCE_PATH, b"<html>proxy error</html>"),
        (REBALANCE_PATH, b'["2025-01-15T10:00:00Z"]'),
        (REBALANCE_PATH, b'{"noticeTime": "yesterday"}'),
        (REBALANCE_PATH, b'{"noticeTime": "2025-01-15T10:00:00"}'),
        (INSTANCE_ACTION_PATH, b'{"action": "explode", "time": "2025-01-15T10:02:00Z"}'),
        (INSTANCE_ACTION_PATH, b'{"action": "terminate"}'),
        (INSTANCE_ACTION_PATH, b"\xff\xfe"),
    ],
)
def test_garbage_documents_are_malformed_errors_and_not_retried(
    imds: FaultyIMDS, make_client: MakeClient, path: str, body: bytes
) -> None:
    imds.inject(path, Garbage(body))
    client = make_client()
    read = client.rebalance_recommendation if path == REBALANCE_PATH else client.interruption_notice

    with pytest.raises(IMDSError) as caught:
        read()

    assert caught.value.kind is IMDSErrorKind.MALFORMED
    assert path in str(caught.value)
    assert imds.count("GET", path) == 1


def test_a_transient_5xx_is_retried_and_the_read_succeeds(imds: FaultyIMDS, make_client: MakeClient) -> None:
    imds.set_rebalance("2025-01-15T10:00:00Z")
    imds.inject(REBALANCE_PATH, Status(503), times=2)

    assert make_client(attempts=3).rebalance_recommendation() == RebalanceRecommendation(NOTICE)
    assert imds.count("GET", REBALANCE_PATH) == 3


def test_a_persistent_5xx_fails_after_the_bounded_number_of_tries(imds: FaultyIMDS, make_client: MakeClient) -> None:
    imds.inject(REBALANCE_PATH, Status(500))

    with pytest.raises(IMDSError) as caught:
        make_client(attempts=3).rebalance_recommendation()

    assert caught.value.kind is IMDSErrorKind.SERVER_ERROR
    assert "HTTP 500" in str(caught.value)
    assert imds.count("GET", REBALANCE_PATH) == 3


def test_retry_pauses_are_jittered_and_bounded(imds: FaultyIMDS, make_client: MakeClient, clock: ManualClock) -> None:
    imds.inject(REBALANCE_PATH, Status(502))
    client = make_client(attempts=5, retry_base_delay=0.1, retry_max_delay=0.3)

    with pytest.raises(IMDSError):
        client.rebalance_recommendation()

    ceilings = [0.1, 0.2, 0.3, 0.3]
    assert len(clock.slept) == len(ceilings)
    for pause, ceiling in zip(clock.slept, ceilings, strict=True):
        assert ceiling / 2 <= pause <= ceiling
    assert len(set(clock.slept)) == len(clock.slept)  # jittered, not a fixed schedule


def test_a_slow_imds_times_out_each_try(imds: FaultyIMDS, make_client: MakeClient) -> None:
    imds.inject(INSTANCE_ACTION_PATH, Slow(2.0))

    with pytest.raises(IMDSError) as caught:
        make_client(timeout=0.1, attempts=2).interruption_notice()

    assert caught.value.kind is IMDSErrorKind.TIMEOUT
    assert caught.value.affects_every_read
    assert "within 0.1 s" in str(caught.value)
    assert imds.count("GET", INSTANCE_ACTION_PATH) == 2


def test_a_connection_closed_without_answer_is_a_connection_error(imds: FaultyIMDS, make_client: MakeClient) -> None:
    imds.inject(INSTANCE_ACTION_PATH, Hangup())

    with pytest.raises(IMDSError) as caught:
        make_client(attempts=2).interruption_notice()

    assert caught.value.kind is IMDSErrorKind.CONNECTION
    assert caught.value.affects_every_read


def test_nothing_listening_is_a_connection_error(make_client: MakeClient) -> None:
    with socket.socket() as placeholder:
        placeholder.bind(("127.0.0.1", 0))
        port = placeholder.getsockname()[1]
    with pytest.raises(IMDSError) as caught:
        make_client(url=f"http://127.0.0.1:{port}", attempts=2).rebalance_recommendation()
    assert caught.value.kind is IMDSErrorKind.CONNECTION
    assert f"127.0.0.1:{port}" in str(caught.value)


def test_token_is_reused_until_shortly_before_expiry_then_refreshed(
    imds: FaultyIMDS, make_client: MakeClient, clock: ManualClock
) -> None:
    client = make_client(token_ttl=300)  # renewed 60 s before it expires

    client.rebalance_recommendation()
    client.interruption_notice()
    clock.advance(239)
    client.rebalance_recommendation()
    assert imds.token_requests == 1

    clock.advance(2)
    client.rebalance_recommendation()
    assert imds.token_requests == 2
    assert {seen.ttl_header for seen in imds.requests if seen.method == "PUT"} == {"300"}
    tokens = [seen.token for seen in imds.requests if seen.method == "GET"]
    assert tokens[0] == tokens[2] != tokens[3]


def test_a_401_makes_the_client_fetch_a_new_token_and_retry(imds: FaultyIMDS, make_client: MakeClient) -> None:
    imds.set_rebalance("2025-01-15T10:00:00Z")
    client = make_client()
    client.rebalance_recommendation()
    imds.expire_tokens()  # e.g. IMDS restarted: the token we hold is no longer valid

    assert client.rebalance_recommendation() == RebalanceRecommendation(NOTICE)
    assert imds.token_requests == 2
    assert [seen.status for seen in imds.requests if seen.method == "GET"] == [200, 401, 200]


def test_a_short_401_storm_is_ridden_out_within_one_read(imds: FaultyIMDS, make_client: MakeClient) -> None:
    imds.reject_tokens(2)

    assert make_client(attempts=3).interruption_notice() is None
    assert imds.token_requests == 3


def test_a_long_401_storm_fails_the_read_and_a_later_read_recovers(imds: FaultyIMDS, make_client: MakeClient) -> None:
    imds.set_interruption("stop", "2025-01-15T10:02:00Z")
    imds.reject_tokens(4)
    client = make_client(attempts=3)

    with pytest.raises(IMDSError) as caught:
        client.interruption_notice()
    assert caught.value.kind is IMDSErrorKind.UNAUTHORIZED
    assert "401" in str(caught.value)

    notice = client.interruption_notice()
    assert notice is not None
    assert notice.action == "stop"


def test_a_failed_token_request_is_retried(imds: FaultyIMDS, make_client: MakeClient) -> None:
    imds.inject(TOKEN_PATH, Status(503), times=1)

    assert make_client().rebalance_recommendation() is None
    assert imds.token_requests == 2


@pytest.mark.parametrize("status", [403, 404, 405])
def test_imdsv1_only_endpoint_without_fallback_is_a_clear_error(make_client: MakeClient, status: int) -> None:
    with FaultyIMDS(IMDSMode.V1_ONLY, v1_token_status=status) as v1_only:
        client = make_client(url=v1_only.url)
        with pytest.raises(IMDSError) as caught:
            client.rebalance_recommendation()

        assert caught.value.kind is IMDSErrorKind.IMDSV2_UNAVAILABLE
        assert not caught.value.retryable
        assert f"HTTP {status}" in str(caught.value)
        assert "--imds-v1-fallback" in str(caught.value)
        assert v1_only.count("GET", REBALANCE_PATH) == 0
        assert not client.using_v1


def test_imdsv1_only_endpoint_with_fallback_is_read_without_a_token(make_client: MakeClient) -> None:
    with FaultyIMDS(IMDSMode.V1_ONLY) as v1_only:
        v1_only.set_rebalance("2025-01-15T10:00:00Z")
        client = make_client(url=v1_only.url, allow_v1_fallback=True)

        assert client.rebalance_recommendation() == RebalanceRecommendation(NOTICE)
        assert client.interruption_notice() is None
        assert client.using_v1
        assert v1_only.token_requests == 1  # probed once, not on every read
        assert all(seen.token is None for seen in v1_only.requests if seen.method == "GET")


def test_v1_fallback_returns_to_tokens_when_imds_starts_demanding_them(make_client: MakeClient) -> None:
    with FaultyIMDS(IMDSMode.V1_ONLY) as server:
        client = make_client(url=server.url, allow_v1_fallback=True)
        client.rebalance_recommendation()
        server.mode = IMDSMode.V2_REQUIRED

        assert client.rebalance_recommendation() is None
        assert not client.using_v1
        assert server.requests[-1].token is not None


def test_fallback_allowed_still_uses_tokens_when_imds_has_them(make_client: MakeClient) -> None:
    with FaultyIMDS(IMDSMode.V2_OPTIONAL) as server:
        client = make_client(url=server.url, allow_v1_fallback=True)
        client.rebalance_recommendation()
        assert not client.using_v1
        assert server.requests[-1].token is not None


def test_malformed_instance_id_is_reported(imds: FaultyIMDS, make_client: MakeClient) -> None:
    imds.set_document("/latest/meta-data/instance-id", "<html>")
    with pytest.raises(IMDSError) as caught:
        make_client().instance_id()
    assert caught.value.kind is IMDSErrorKind.MALFORMED


@pytest.mark.parametrize(
    ("url", "token_ttl", "attempts"),
    [
        ("https://169.254.169.254", 21600, 3),
        ("169.254.169.254", 21600, 3),
        ("http://169.254.169.254", 0, 3),
        ("http://169.254.169.254", 21601, 3),
        ("http://169.254.169.254", 21600, 0),
    ],
)
def test_bad_client_settings_are_refused(url: str, token_ttl: int, attempts: int) -> None:
    with pytest.raises(ValueError, match="IMDS"):
        IMDSClient(url, token_ttl=token_ttl, attempts=attempts)
