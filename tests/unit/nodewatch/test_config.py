"""Settings from flags and environment: defaults, precedence, and refusals with a reason."""

from __future__ import annotations

import logging

import pytest

from nodewatch.config import Settings, parse_settings


def test_in_a_pod_the_environment_is_enough() -> None:
    settings = parse_settings([], {"NODE_NAME": "ip-10-0-0-1"})
    assert settings == Settings(node_name="ip-10-0-0-1")
    assert settings.imds_url == "http://169.254.169.254"
    assert settings.poll_interval == 2.0
    assert settings.imds_v1_fallback is False
    assert settings.kubeconfig is None


def test_flags_win_over_environment() -> None:
    environ = {
        "NODE_NAME": "from-env",
        "NODEWATCH_POLL_INTERVAL": "5",
        "NODEWATCH_IMDS_V1_FALLBACK": "true",
        "LOG_LEVEL": "DEBUG",
    }
    settings = parse_settings(
        [
            "--node-name",
            "from-flag",
            "--imds-url",
            "http://127.0.0.1:1338",
            "--kubeconfig",
            "/tmp/kc",
            "--poll-interval",
            "0.5",
            "--no-imds-v1-fallback",
            "--listen",
            "127.0.0.1:0",
        ],
        environ,
    )
    assert settings.node_name == "from-flag"
    assert settings.imds_url == "http://127.0.0.1:1338"
    assert settings.kubeconfig == "/tmp/kc"
    assert settings.poll_interval == 0.5
    assert settings.imds_v1_fallback is False
    assert (settings.listen_host, settings.listen_port) == ("127.0.0.1", 0)
    assert settings.log_level == logging.DEBUG


def test_environment_settings_are_used() -> None:
    settings = parse_settings(
        [],
        {
            "NODE_NAME": "n",
            "NODEWATCH_IMDS_V1_FALLBACK": "yes",
            "NODEWATCH_LISTEN": "[::]:9000",
            "NODEWATCH_UNREADY_AFTER": "60",
        },
    )
    assert settings.imds_v1_fallback is True
    assert (settings.listen_host, settings.listen_port) == ("::", 9000)
    assert settings.unready_after == 60.0


@pytest.mark.parametrize(
    ("argv", "environ", "reason"),
    [
        ([], {}, "node name is missing"),
        (["--node-name", "n", "--poll-interval", "fast"], {}, "--poll-interval='fast' is invalid"),
        (["--node-name", "n", "--poll-interval", "0.01"], {}, "NODEWATCH_POLL_INTERVAL) 0.01 must be 0.1 to 60 s"),
        (["--node-name", "n"], {"NODEWATCH_POLL_INTERVAL": "1e300"}, "NODEWATCH_POLL_INTERVAL) 1e+300 must be 0.1 to"),
        (["--node-name", "n"], {"NODEWATCH_POLL_INTERVAL": "inf"}, "NODEWATCH_POLL_INTERVAL='inf' is invalid"),
        (["--node-name", "n", "--poll-interval", "nan"], {}, "not a finite number"),
        (
            ["--node-name", "n", "--max-backoff", "1"],
            {},
            "--max-backoff (NODEWATCH_MAX_BACKOFF) 1 must be at least --poll-interval (NODEWATCH_POLL_INTERVAL) 2",
        ),
        (["--node-name", "n"], {"NODEWATCH_UNREADY_AFTER": "1e9"}, "NODEWATCH_UNREADY_AFTER) 1e+09 must be at least"),
        (["--node-name", "n", "--imds-token-ttl", "21601"], {}, "1 to 21600 seconds"),
        (["--node-name", "n", "--imds-url", "https://169.254.169.254"], {}, "must start with http://"),
        (["--node-name", "n", "--listen", "9732"], {}, "is not HOST:PORT"),
        (["--node-name", "n"], {"LOG_LEVEL": "loud"}, "LOG_LEVEL='loud' is not a log level"),
        (["--node-name", "n"], {"NODEWATCH_IMDS_V1_FALLBACK": "maybe"}, "NODEWATCH_IMDS_V1_FALLBACK is invalid"),
        (
            ["--node-name", "n"],
            {"NODEWATCH_IMDS_TIMEOUT": "0"},
            "--imds-timeout (NODEWATCH_IMDS_TIMEOUT) 0 must be above 0",
        ),
    ],
)
def test_bad_settings_exit_with_status_2_and_say_why(
    argv: list[str], environ: dict[str, str], reason: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as caught:
        parse_settings(argv, environ)
    assert caught.value.code == 2
    assert reason in capsys.readouterr().err
