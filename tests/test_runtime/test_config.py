"""symbi.toml + environment + flags (SPEC §6)."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from runtime.config import Config, ConfigError, load_config


def write(tmp_path: Path, text: str, name: str = "symbi.toml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def error_of(
    path: Path | None, env: dict[str, str] | None = None, overrides: dict[str, Any] | None = None
) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path, env=env or {}, overrides=overrides)
    return str(info.value)


def test_defaults_without_any_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    c = load_config(env={})
    s = c.scheduler
    assert (
        s.tick_interval_seconds,
        s.max_jitter_seconds,
        s.max_concurrent_jobs,
        s.enable_metrics,
        s.default_max_retries,
        s.shutdown_timeout_seconds,
        s.lease_ttl_seconds,
        s.session_max_bytes,
    ) == (1, 0, 10, True, 3, 30, 15, 262144)
    d = c.delivery
    assert (
        d.webhook_timeout_seconds,
        d.webhook_retry_attempts,
        d.slack_api_token,
        d.smtp_port,
        d.smtp_starttls,
    ) == (30, 3, None, 587, True)
    assert d.retry_backoff_seconds == 2.0  # the first delivery retry's delay (H15)
    assert (c.api.host, c.api.port, c.api.api_keys) == ("127.0.0.1", 8080, [])
    assert (c.agentpin.required, c.agentpin.domain, c.agentpin.trust_bundle) == (False, None, None)
    assert c.data_dir == Path(".symbi")
    assert c.store_path == Path(".symbi/state.db")
    assert c.log_dir == Path(".symbi/logs")
    assert (c.environment, c.providers, c.source) == (None, {}, None)
    assert Config() == c  # the model's own defaults are the same


def test_full_file(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        data_dir = "/var/lib/symbi"
        environment = "staging"

        [scheduler]
        tick_interval_seconds = 0.5
        max_jitter_seconds = 30
        max_concurrent_jobs = 20
        enable_metrics = false
        default_max_retries = 5
        shutdown_timeout_seconds = 60
        lease_ttl_seconds = 20
        session_max_bytes = 4096

        [scheduler.delivery]
        webhook_timeout_seconds = 10
        webhook_retry_attempts = 1
        slack_api_token = "xoxb-literal"
        slack_default_channel = "#ops"
        smtp_host = "smtp.example.com"
        smtp_port = 2525
        smtp_username = "bot"
        smtp_password = "pw"
        email_from = "symbi@example.com"
        smtp_starttls = false
        retry_backoff_seconds = 0.25

        [store]
        path = "/tmp/elsewhere.db"

        [api]
        host = "0.0.0.0"
        port = 9000
        api_keys = ["k1", "k2"]

        [agentpin]
        required = true
        domain = "agents.example.com"
        trust_bundle = "trust.json"

        [providers.ollama]
        base_url = "http://127.0.0.1:11434/v1"
        models = ["llama3.2"]
    """,
    )
    c = load_config(path, env={})
    assert c.source == path
    assert c.data_dir == Path("/var/lib/symbi") and c.environment == "staging"
    assert c.scheduler.model_dump() == {
        "tick_interval_seconds": 0.5,
        "max_jitter_seconds": 30,
        "max_concurrent_jobs": 20,
        "enable_metrics": False,
        "default_max_retries": 5,
        "shutdown_timeout_seconds": 60,
        "lease_ttl_seconds": 20,
        "session_max_bytes": 4096,
    }
    d = c.delivery
    assert d.slack_api_token == SecretStr("xoxb-literal") and d.slack_default_channel == "#ops"
    assert (d.smtp_host, d.smtp_port, d.smtp_username, d.email_from, d.smtp_starttls) == (
        "smtp.example.com",
        2525,
        "bot",
        "symbi@example.com",
        False,
    )
    assert d.smtp_password is not None and d.smtp_password.get_secret_value() == "pw"
    assert d.retry_backoff_seconds == 0.25
    assert c.store_path == Path("/tmp/elsewhere.db")
    assert [k.get_secret_value() for k in c.api.api_keys] == ["k1", "k2"]
    assert (c.api.host, c.api.port) == ("0.0.0.0", 9000)
    assert (c.agentpin.required, c.agentpin.domain, c.agentpin.trust_bundle) == (
        True,
        "agents.example.com",
        Path("trust.json"),
    )
    assert c.providers == {
        "ollama": {"base_url": "http://127.0.0.1:11434/v1", "models": ["llama3.2"]}
    }


def test_secrets_are_masked_in_repr_and_dumps(tmp_path: Path) -> None:
    c = load_config(
        write(tmp_path, '[scheduler.delivery]\nslack_api_token = "xoxb-SECRET"\n'), env={}
    )
    assert "xoxb-SECRET" not in repr(c)
    assert "xoxb-SECRET" not in c.model_dump_json()


def test_store_path_defaults_under_data_dir(tmp_path: Path) -> None:
    c = load_config(write(tmp_path, 'data_dir = "/srv/sym"\n'), env={})
    assert c.store_path == Path("/srv/sym/state.db")
    assert load_config(
        None, env={"SYMBI_DATA_DIR": "/d", "SYMBI_CONFIG": str(tmp_path / "symbi.toml")}
    ).store_path == Path("/d/state.db")


def test_file_lookup_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "[api]\nport = 1001\n")  # ./symbi.toml
    env_file = write(tmp_path, "[api]\nport = 1002\n", "from-env.toml")
    flag_file = write(tmp_path, "[api]\nport = 1003\n", "from-flag.toml")
    assert load_config(env={}).api.port == 1001
    assert load_config(env={}).source == Path("symbi.toml")
    assert load_config(env={"SYMBI_CONFIG": str(env_file)}).api.port == 1002
    assert load_config(flag_file, env={"SYMBI_CONFIG": str(env_file)}).api.port == 1003


def test_explicitly_named_file_must_exist(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    assert error_of(missing) == f"{missing}: config file does not exist"
    assert error_of(None, env={"SYMBI_CONFIG": str(missing)}) == (
        f"{missing}: config file (from $SYMBI_CONFIG) does not exist"
    )
    assert error_of(tmp_path) == f"{tmp_path}: config file is not a file"


def test_precedence_flag_over_environment_over_file_over_default(tmp_path: Path) -> None:
    path = write(tmp_path, "[scheduler]\nmax_concurrent_jobs = 20\nmax_jitter_seconds = 5\n")
    env = {"SYMBI_SCHEDULER_MAX_CONCURRENT": "30"}
    c = load_config(path, env=env)
    assert (c.scheduler.max_concurrent_jobs, c.scheduler.max_jitter_seconds) == (
        30,
        5,
    )  # env > file
    assert c.scheduler.default_max_retries == 3  # default
    c = load_config(path, env=env, overrides={"scheduler": {"max_concurrent_jobs": 40}})
    assert c.scheduler.max_concurrent_jobs == 40  # flag > env
    c = load_config(
        path,
        env=env,
        overrides={"scheduler.max_concurrent_jobs": "50", "scheduler.max_jitter_seconds": None},
    )
    assert (c.scheduler.max_concurrent_jobs, c.scheduler.max_jitter_seconds) == (
        50,
        5,
    )  # None: flag not given


@pytest.mark.parametrize(
    ("var", "value", "get", "expected"),
    [
        ("SYMBI_SCHEDULER_MAX_JITTER", "30", lambda c: c.scheduler.max_jitter_seconds, 30.0),
        ("SYMBI_SCHEDULER_MAX_CONCURRENT", "20", lambda c: c.scheduler.max_concurrent_jobs, 20),
        (
            "SYMBI_SLACK_TOKEN",
            "xoxb-1",
            lambda c: c.delivery.slack_api_token.get_secret_value(),
            "xoxb-1",
        ),
        (
            "SYMBI_WEBHOOK_AUTH_HEADER",
            "Bearer t",
            lambda c: c.delivery.webhook_auth_header.get_secret_value(),
            "Bearer t",
        ),
        ("SYMBI_AGENTPIN_REQUIRED", "true", lambda c: c.agentpin.required, True),
        ("SYMBI_AGENTPIN_REQUIRED", "0", lambda c: c.agentpin.required, False),
        (
            "SYMBI_AGENTPIN_DOMAIN",
            "agent.example.com",
            lambda c: c.agentpin.domain,
            "agent.example.com",
        ),
        (
            "SYMBI_API_KEY",
            "sekret",
            lambda c: [k.get_secret_value() for k in c.api.api_keys],
            ["sekret"],
        ),
        ("SYMBI_ENV", "production", lambda c: c.environment, "production"),
        ("SYMBI_DATA_DIR", "/data", lambda c: c.data_dir, Path("/data")),
        ("SYMBI_STORE", "/data/x.db", lambda c: c.store_path, Path("/data/x.db")),
        ("SYMBI_ENV", "", lambda c: c.environment, None),  # empty = unset
    ],
)
def test_environment_variables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, var: str, value: str, get: Any, expected: Any
) -> None:
    monkeypatch.chdir(tmp_path)
    assert get(load_config(env={var: value})) == expected


def test_api_key_from_environment_adds_to_the_file_keys(tmp_path: Path) -> None:
    path = write(tmp_path, '[api]\napi_keys = ["a"]\n')
    c = load_config(path, env={"SYMBI_API_KEY": "b"})
    assert [k.get_secret_value() for k in c.api.api_keys] == ["a", "b"]
    c = load_config(path, env={"SYMBI_API_KEY": "a"})
    assert [k.get_secret_value() for k in c.api.api_keys] == ["a"]


def test_interpolation_of_string_values(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        environment = "${DEPLOY_ENV}-eu"
        [scheduler]
        max_concurrent_jobs = "${MAXC}"
        enable_metrics = "${METRICS}"
        [scheduler.delivery]
        slack_api_token = "${SLACK_API_TOKEN}"
        slack_default_channel = "$${NOT_A_REF}"
        [api]
        api_keys = ["${K1}", "plain"]
    """,
    )
    env = {
        "DEPLOY_ENV": "prod",
        "MAXC": "7",
        "METRICS": "false",
        "SLACK_API_TOKEN": "xoxb-env",
        "K1": "one",
    }
    c = load_config(path, env=env)
    assert c.environment == "prod-eu"
    assert (c.scheduler.max_concurrent_jobs, c.scheduler.enable_metrics) == (7, False)
    assert c.delivery.slack_api_token == SecretStr("xoxb-env")
    assert c.delivery.slack_default_channel == "${NOT_A_REF}"
    assert [k.get_secret_value() for k in c.api.api_keys] == ["one", "plain"]


def test_providers_are_kept_unexpanded_and_expanded_on_use(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[providers.openai]\napi_key = "${OPENAI_API_KEY}"\nbase_url = "https://api.openai.com/v1"\n',
    )
    c = load_config(path, env={})  # the variable is not needed to start
    assert c.providers["openai"]["api_key"] == "${OPENAI_API_KEY}"
    assert c.provider("openai", {"OPENAI_API_KEY": "sk-1"}) == {
        "api_key": "sk-1",
        "base_url": "https://api.openai.com/v1",
    }
    assert c.provider("absent", {}) == {}
    with pytest.raises(ConfigError) as info:
        c.provider("openai", {})
    assert str(info.value) == (
        f"{path}: [providers.openai] api_key: environment variable `OPENAI_API_KEY` is not set"
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        # invalid TOML: file:line:col from tomllib
        ("[scheduler]\nmax_concurrent_jobs = \n", "{f}:2:23: invalid TOML: Invalid value"),
        (
            "[scheduler]\ntick_interval_seconds = 1\n[scheduler]\n",
            "{f}:3:11: invalid TOML: Cannot declare ('scheduler',) twice",
        ),
        (
            'data_dir = "unterminated',
            "{f}:1:25: invalid TOML: Unterminated string (at end of document)",
        ),
        # unknown keys and sections, with suggestions
        (
            "[scheduler]\ntick_interval = 2\n",
            "{f}: [scheduler] unknown key `tick_interval` (did you mean `tick_interval_seconds`?)",
        ),
        (
            "[scheduler.delivery]\nsmtp_hots = 'x'\n",
            "{f}: [scheduler.delivery] unknown key `smtp_hots` (did you mean `smtp_host`?)",
        ),
        ("[api]\nwhatever = 1\n", "{f}: [api] unknown key `whatever`"),
        ("[schedular]\n", "{f}: unknown section `[schedular]` (did you mean `[scheduler]`?)"),
        (
            "[scheduler.deliveri]\n",
            "{f}: unknown section `[scheduler.deliveri]` (did you mean `[scheduler.delivery]`?)",
        ),
        ("datadir = 'x'\n", "{f}: unknown key `datadir` (did you mean `data_dir`?)"),
        ("[store]\npaht = 'x'\n", "{f}: [store] unknown key `paht` (did you mean `path`?)"),
        ("scheduler = 5\n", "{f}: `scheduler` must be a table (`[scheduler]`)"),
        ("providers = 'x'\n", "{f}: `providers` must be a table (`[providers]`)"),
        (
            "[providers]\nopenai = 'x'\n",
            "{f}: `providers.openai` must be a table (`[providers.openai]`)",
        ),
        # wrong types: file, key, value, expectation
        (
            '[scheduler]\nmax_concurrent_jobs = "many"\n',
            '{f}: [scheduler] max_concurrent_jobs = "many": expected an integer',
        ),
        (
            "[scheduler]\nmax_concurrent_jobs = true\n",
            "{f}: [scheduler] max_concurrent_jobs = true: expected an integer",
        ),
        (
            "[scheduler]\nmax_concurrent_jobs = 2.5\n",
            "{f}: [scheduler] max_concurrent_jobs = 2.5: expected an integer",
        ),
        (
            "[scheduler]\nenable_metrics = 1\n",
            "{f}: [scheduler] enable_metrics = 1: expected true or false",
        ),
        (
            "[scheduler]\ntick_interval_seconds = 'fast'\n",
            '{f}: [scheduler] tick_interval_seconds = "fast": expected a number',
        ),
        (
            "[scheduler]\ntick_interval_seconds = 0\n",
            "{f}: [scheduler] tick_interval_seconds = 0: must be greater than 0",
        ),
        (
            "[scheduler]\nmax_concurrent_jobs = 0\n",
            "{f}: [scheduler] max_concurrent_jobs = 0: must be at least 1",
        ),
        ("[api]\nport = 70000\n", "{f}: [api] port = 70000: must be at most 65535"),
        ("[api]\napi_keys = 'single'\n", "{f}: [api] api_keys = <redacted>: expected a list"),
        (
            "[scheduler.delivery]\nslack_api_token = 12345\n",
            "{f}: [scheduler.delivery] slack_api_token = <redacted>: expected a string",
        ),
        ("environment = 3\n", "{f}: environment = 3: expected a string"),
        ("data_dir = 5\n", "{f}: data_dir = 5: expected a path string"),
        ("[store]\npath = []\n", "{f}: [store] path = []: expected a path string"),
        (
            "[agentpin]\ntrust_bundle = false\n",
            "{f}: [agentpin] trust_bundle = false: expected a path string",
        ),
        # missing variables
        (
            '[scheduler.delivery]\nslack_api_token = "${SLACK_API_TOKEN}"\n',
            "{f}: [scheduler.delivery] slack_api_token: environment variable `SLACK_API_TOKEN` is not set",
        ),
        (
            'data_dir = "${HOME_OF_SYMBI}/data"\n',
            "{f}: data_dir: environment variable `HOME_OF_SYMBI` is not set",
        ),
        # interpolated text that is not of the field's type
        (
            '[scheduler]\nmax_concurrent_jobs = "${MAXC}"\n',
            '{f}: [scheduler] max_concurrent_jobs = "${{MAXC}}" (= "lots"): expected an integer',
        ),
    ],
)
def test_bad_files(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    assert error_of(path, env={"MAXC": "lots"}) == message.format(f=path)


def test_all_problems_of_a_file_are_reported_at_once(tmp_path: Path) -> None:
    path = write(
        tmp_path, "[scheduler]\ntick_interval = 1\nmax_concurrent_jobs = 'x'\n[api]\nprot = 1\n"
    )
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert info.value.problems == [
        f"{path}: [scheduler] unknown key `tick_interval` (did you mean `tick_interval_seconds`?)",
        f"{path}: [api] unknown key `prot` (did you mean `port`?)",
    ]  # names first; types are checked once the names are right


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"SYMBI_SCHEDULER_MAX_CONCURRENT": "abc"},
            'environment variable SYMBI_SCHEDULER_MAX_CONCURRENT = "abc": expected an integer '
            "(for [scheduler] max_concurrent_jobs)",
        ),
        (
            {"SYMBI_SCHEDULER_MAX_CONCURRENT": "0"},
            'environment variable SYMBI_SCHEDULER_MAX_CONCURRENT = "0": must be at least 1 '
            "(for [scheduler] max_concurrent_jobs)",
        ),
        (
            {"SYMBI_SCHEDULER_MAX_JITTER": "-1"},
            'environment variable SYMBI_SCHEDULER_MAX_JITTER = "-1": must be at least 0 '
            "(for [scheduler] max_jitter_seconds)",
        ),
        (
            {"SYMBI_AGENTPIN_REQUIRED": "maybe"},
            'environment variable SYMBI_AGENTPIN_REQUIRED = "maybe": expected true or false '
            "(for [agentpin] required)",
        ),
    ],
)
def test_bad_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, env: dict[str, str], message: str
) -> None:
    monkeypatch.chdir(tmp_path)
    assert error_of(None, env=env) == message


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"scheduler.max_concurent_jobs": 3},
            "option `scheduler.max_concurent_jobs`: no such setting (did you mean `scheduler.max_concurrent_jobs`?)",
        ),
        (
            {"api": {"port": "http"}},
            'option api.port = "http": expected an integer (for [api] port)',
        ),
        ({"api": {"port": -1}}, "option api.port = -1: must be at least 0 (for [api] port)"),
    ],
)
def test_bad_overrides(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, overrides: dict[str, Any], message: str
) -> None:
    monkeypatch.chdir(tmp_path)
    assert error_of(None, overrides=overrides) == message


def test_override_shapes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    c = load_config(
        env={},
        overrides={
            "store_path": tmp_path / "s.db",
            "data_dir": "d",
            "api": {"port": 0},
            "scheduler": {"delivery": {"smtp_port": "25"}},
            "agentpin.domain": "x.example",
        },
    )
    assert (c.store_path, c.data_dir, c.api.port, c.delivery.smtp_port, c.agentpin.domain) == (
        tmp_path / "s.db",
        Path("d"),
        0,
        25,
        "x.example",
    )


def test_unreadable_and_non_utf8_files(tmp_path: Path) -> None:
    path = tmp_path / "symbi.toml"
    path.write_bytes(b'environment = "\xff"\n')
    assert error_of(path) == f"{path}: config file is not UTF-8 (invalid start byte)"


def test_config_is_immutable() -> None:
    c = Config()
    with pytest.raises(Exception):  # noqa: B017 - pydantic's ValidationError for frozen models
        c.scheduler.max_concurrent_jobs = 3  # type: ignore[misc]


_toml_atoms = st.one_of(
    st.integers(-5, 100_000).map(str),
    st.sampled_from(["true", "false", '"x"', "'${A}'", "[1, 2]", '["k"]', "1.5", "{}"]),
    st.text(max_size=8),
)
_keys = st.sampled_from(
    [
        "tick_interval_seconds",
        "max_concurrent_jobs",
        "enable_metrics",
        "port",
        "api_keys",
        "path",
        "required",
        "domain",
        "data_dir",
        "environment",
        "smtp_port",
        "bogus",
        "x y",
        "",
    ]
)
_sections = st.sampled_from(
    [
        "",
        "[scheduler]",
        "[scheduler.delivery]",
        "[api]",
        "[store]",
        "[agentpin]",
        "[providers.p]",
        "[nope]",
        "[scheduler",
        "[[api]]",
    ]
)


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(st.tuples(_sections, _keys, _toml_atoms), max_size=6))
def test_any_file_gives_a_config_or_a_config_error(
    tmp_path: Path, lines: list[tuple[str, str, str]]
) -> None:
    text = "\n".join(f"{sec}\n{key} = {val}" for sec, key, val in lines)
    path = tmp_path / "fuzz.toml"
    path.write_text(text)
    try:
        c = load_config(path, env={"A": "1"})
    except ConfigError as exc:
        assert str(exc) and "Traceback" not in str(exc)
    else:
        assert isinstance(c, Config)
