"""Runtime configuration: ``symbi.toml`` + environment + command-line flags (SPEC §6).

Where the file comes from: the ``path`` argument (``--config``), else ``$SYMBI_CONFIG``, else
``./symbi.toml`` if it exists (an absent default file means "all defaults"; an explicitly named
file that is missing is an error). Precedence, per key: flag (``overrides``) > environment >
file > default. ``${VAR}`` in a file's string values is expanded from the environment at load
time (a missing variable is an error naming the file and key), except inside
``[providers.NAME]`` tables, which are kept as written and expanded by :meth:`Config.provider`
when a provider is actually used — a config listing several providers does not need every
provider's key to start.

File values must have the right TOML type (``max_concurrent_jobs = true`` is an error); values
that arrive as text — environment variables, flags, ``"${VAR}"`` strings — are converted
(``"20"`` → 20, ``"true"`` → True). Relative paths are relative to the working directory.

Every problem is a :class:`ConfigError` whose message names the file (or variable, or flag),
the key and the reason; all problems of a file are reported at once.
"""

from __future__ import annotations

import functools
import json
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    TypeAdapter,
    ValidationError,
    model_validator,
)

from compiler.diagnostics import did_you_mean
from runtime.envexpand import MissingEnvVar, expand, refs

DEFAULT_CONFIG_FILE = "symbi.toml"
DEFAULT_DATA_DIR = Path(".symbi")


class ConfigError(Exception):
    """A configuration problem; ``str()`` is the user-facing message (one line per problem)."""

    def __init__(self, problems: list[str] | str) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


_STRICT = ConfigDict(strict=True, frozen=True, extra="forbid")


class SchedulerConfig(BaseModel):
    """``[scheduler]``."""

    model_config = _STRICT

    tick_interval_seconds: float = Field(default=1.0, gt=0)
    max_jitter_seconds: float = Field(default=0.0, ge=0)
    max_concurrent_jobs: int = Field(default=10, ge=1)
    enable_metrics: bool = True
    default_max_retries: int = Field(default=3, ge=0)
    shutdown_timeout_seconds: float = Field(default=30.0, ge=0)
    lease_ttl_seconds: float = Field(default=15.0, gt=0)  # our addition: the single-scheduler lease
    # our addition: size cap of a shared_persistent session context (oldest messages dropped)
    session_max_bytes: int = Field(default=256 * 1024, ge=1024)


class DeliveryConfig(BaseModel):
    """``[scheduler.delivery]``. Secrets are ``SecretStr`` (masked in reprs and dumps)."""

    model_config = _STRICT

    webhook_timeout_seconds: float = Field(default=30.0, gt=0)
    webhook_retry_attempts: int = Field(default=3, ge=0)
    webhook_auth_header: SecretStr | None = None  # e.g. "Bearer …" ($SYMBI_WEBHOOK_AUTH_HEADER)
    slack_api_token: SecretStr | None = None
    slack_default_channel: str | None = None
    smtp_host: str | None = None
    smtp_port: int = Field(default=587, ge=1, le=65535)
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    email_from: str | None = None
    smtp_starttls: bool = True
    smtp_ssl: bool = False  # our addition: implicit TLS (port 465) instead of STARTTLS
    # our additions (delivery channels, H11):
    smtp_timeout_seconds: float = Field(default=30.0, gt=0)
    slack_api_url: str = "https://slack.com/api"  # Web API base URL (tests point it locally)
    templates_dir: Path | None = Field(default=None, strict=False)  # overrides stdlib/templates
    log_file_format: Literal["text", "json"] = "text"  # json: one JSON object per line
    log_file_max_bytes: int = Field(default=10 * 1024 * 1024, ge=0)  # 0: never rotate
    log_file_backups: int = Field(default=5, ge=0)
    # our addition (H15): the first delivery retry waits this long, doubling per attempt (capped
    # at 10 min; a peer's Retry-After wins)
    retry_backoff_seconds: float = Field(default=2.0, gt=0)


class ApiConfig(BaseModel):
    """``[api]``. ``$SYMBI_API_KEY`` adds one key to ``api_keys``."""

    model_config = _STRICT

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)  # 0: any free port (tests)
    api_keys: list[SecretStr] = Field(default_factory=list)
    public_health: bool = True  # our addition: health, metrics and openapi.json need no key


class AgentPinConfig(BaseModel):
    """``[agentpin]``."""

    model_config = _STRICT

    required: bool = False
    domain: str | None = None
    trust_bundle: Path | None = Field(default=None, strict=False)


class Config(BaseModel):
    """The whole runtime configuration (immutable)."""

    model_config = _STRICT

    scheduler: SchedulerConfig = SchedulerConfig()  # frozen: one shared default is safe
    delivery: DeliveryConfig = DeliveryConfig()  # frozen: one shared default is safe
    data_dir: Path = Field(default=DEFAULT_DATA_DIR, strict=False)
    store_path: Path = Field(default=None, strict=False)  # type: ignore[assignment]  # filled below
    environment: str | None = None
    api: ApiConfig = ApiConfig()  # frozen: one shared default is safe
    agentpin: AgentPinConfig = AgentPinConfig()  # frozen: one shared default is safe
    providers: dict[str, dict[str, Any]] = Field(default_factory=dict)  # as written, unexpanded
    source: Path | None = Field(default=None, strict=False)  # the file loaded; None: no file

    @model_validator(mode="before")
    @classmethod
    def _default_store_path(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("store_path") is None:
            data = dict(data)
            data_dir = data.get("data_dir")
            if not isinstance(data_dir, str | os.PathLike) or not data_dir:
                data_dir = DEFAULT_DATA_DIR  # a bad data_dir is reported on its own
            data["store_path"] = Path(data_dir) / "state.db"
        return data

    @property
    def log_dir(self) -> Path:
        """Where ``log_file`` delivery writes (``<data_dir>/logs``)."""
        return self.data_dir / "logs"

    def provider(self, name: str, env: Mapping[str, str] | None = None) -> dict[str, Any]:
        """``[providers.NAME]`` with ``${VAR}`` expanded now (``{}`` if not configured).
        Raises ConfigError naming the provider and key when a variable is missing."""
        table = self.providers.get(name, {})
        where = f"{self.source or DEFAULT_CONFIG_FILE}: [providers.{name}]"
        return {
            k: _expand_value(v, os.environ if env is None else env, f"{where} {k}")
            for k, v in table.items()
        }


# ----------------------------------------------------------------------------- providers

PROVIDER_KINDS = ("openai", "anthropic")
# The keys of a [providers.NAME] table (runtime.llm documents what each one does).
PROVIDER_KEYS = (
    "kind",
    "base_url",
    "api_key_env",
    "api_key",
    "models",
    "timeout_seconds",
    "max_retries",
    "headers",
)


def check_provider_table(name: str, table: Mapping[str, Any], where: str = "") -> list[str]:
    """Problems with the shape of a ``[providers.NAME]`` table as written: unknown keys and
    wrong types (``${VAR}`` strings pass; they are checked again once expanded, on use).
    ``where`` prefixes each message (default ``[providers.NAME]``)."""
    prefix = where or f"[providers.{name}]"
    problems: list[str] = []
    for key, value in table.items():
        if key not in PROVIDER_KEYS:
            guess = did_you_mean(key, PROVIDER_KEYS)
            hint = f" (did you mean `{guess}`?)" if guess else ""
            problems.append(f"{prefix}: unknown key `{key}`{hint}")
            continue
        reason = _provider_key_problem(key, value)
        if reason:
            problems.append(f"{prefix} {key}: {reason}")
    return problems


def _provider_key_problem(key: str, value: Any) -> str | None:
    if key in ("base_url", "api_key_env", "api_key"):
        return None if isinstance(value, str) else "expected a string"
    if key == "kind":
        if not isinstance(value, str):
            return "expected a string"
        if value not in PROVIDER_KINDS and not refs(value):
            kinds = ", ".join(repr(k) for k in PROVIDER_KINDS)
            return f"must be one of {kinds}, not {value!r}"
        return None
    if key == "models":
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            return 'expected a list of strings (model name patterns such as "claude-*")'
        return None
    if key == "timeout_seconds":
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            return "expected a number"
        if isinstance(value, int | float) and not 0 < value < float("inf"):  # also nan
            return "must be a finite number greater than 0"
        return None
    if key == "max_retries":
        if isinstance(value, bool) or not isinstance(value, int | str):
            return "expected an integer"
        if isinstance(value, int) and value < 0:
            return "must be at least 0"
        return None
    # headers
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        return "expected a table of strings"
    return None


# ------------------------------------------------------------------------------- loading

# Sections and the model of each; "" is the top level.
_SECTIONS: dict[str, type[BaseModel]] = {
    "scheduler": SchedulerConfig,
    "scheduler.delivery": DeliveryConfig,
    "api": ApiConfig,
    "agentpin": AgentPinConfig,
}
_TOP_KEYS = ("data_dir", "environment")
_STORE_KEYS = ("path",)
_TOP_TABLES = ("scheduler", "store", "api", "agentpin", "providers")
_SECRET_KEYS = {"webhook_auth_header", "slack_api_token", "smtp_password", "api_keys"}

# (section, key) of each environment variable; SYMBI_API_KEY is handled apart (it adds a key).
_ENV_VARS: dict[str, tuple[str, str]] = {
    "SYMBI_SCHEDULER_MAX_JITTER": ("scheduler", "max_jitter_seconds"),
    "SYMBI_SCHEDULER_MAX_CONCURRENT": ("scheduler", "max_concurrent_jobs"),
    "SYMBI_SLACK_TOKEN": ("scheduler.delivery", "slack_api_token"),
    "SYMBI_WEBHOOK_AUTH_HEADER": ("scheduler.delivery", "webhook_auth_header"),
    "SYMBI_AGENTPIN_REQUIRED": ("agentpin", "required"),
    "SYMBI_AGENTPIN_DOMAIN": ("agentpin", "domain"),
    "SYMBI_ENV": ("", "environment"),
    "SYMBI_DATA_DIR": ("", "data_dir"),
    "SYMBI_STORE": ("store", "path"),
}
ENV_VARS = ("SYMBI_CONFIG", "SYMBI_API_KEY", *_ENV_VARS)  # every variable read here


@dataclass(frozen=True, slots=True)
class _Setting:
    value: Any
    origin: str  # "symbi.toml: [scheduler]" / "environment variable X" / "option a.b"
    textual: bool  # arrived as text (env, flag, "${VAR}"): convert to the field's type
    written: Any = None  # the file's value before ${VAR} expansion, when different


def _field_name(section: str, key: str) -> str:
    return f"[{section}] {key}" if section else key


def _render(key: str, value: Any) -> str:
    if key in _SECRET_KEYS:
        return "<redacted>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    return repr(value)


def _expand_value(value: Any, env: Mapping[str, str], where: str) -> Any:
    """Expand ``${VAR}`` in strings (recursively in lists and tables)."""
    if isinstance(value, str):
        try:
            return expand(value, env)
        except MissingEnvVar as exc:
            raise ConfigError(f"{where}: {exc}") from None
    if isinstance(value, list):
        return [_expand_value(v, env, where) for v in value]
    if isinstance(value, dict):
        return {k: _expand_value(v, env, f"{where}.{k}") for k, v in value.items()}
    return value


def _has_refs(value: Any) -> bool:
    if isinstance(value, str):
        return bool(refs(value))
    if isinstance(value, list):
        return any(_has_refs(v) for v in value)
    return False


def _toml_error(file: str, text: str, exc: tomllib.TOMLDecodeError) -> str:
    message = str(exc)
    m = re.search(r"\s*\(at line (\d+), column (\d+)\)$", message)
    if m:
        return f"{file}:{m.group(1)}:{m.group(2)}: invalid TOML: {message[: m.start()]}"
    m = re.search(r"\s*\(at end of document\)$", message)
    if m:
        lines = text.split("\n")
        return (
            f"{file}:{len(lines)}:{len(lines[-1]) + 1}: invalid TOML: {message[: m.start()]} "
            "(at end of document)"
        )
    return f"{file}: invalid TOML: {message}"


def _find_file(path: Path | None, env: Mapping[str, str]) -> Path | None:
    if path is not None:
        explicit: Path | None = Path(path)
    elif env.get("SYMBI_CONFIG"):
        explicit = Path(env["SYMBI_CONFIG"])
    else:
        explicit = None
    if explicit is not None:
        if not explicit.is_file():
            how = "" if path is not None else " (from $SYMBI_CONFIG)"
            what = "is not a file" if explicit.exists() else "does not exist"
            raise ConfigError(f"{explicit}: config file{how} {what}")
        return explicit
    default = Path(DEFAULT_CONFIG_FILE)
    return default if default.is_file() else None


def _read_toml(file: Path) -> dict[str, Any]:
    name = str(file)
    try:
        text = file.read_bytes().decode("utf-8")
    except OSError as exc:
        raise ConfigError(f"{name}: cannot read config file: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{name}: config file is not UTF-8 ({exc.reason})") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(_toml_error(name, text, exc)) from None


def _allowed_keys(section: str) -> tuple[str, ...]:
    if section == "":
        return _TOP_KEYS
    if section == "store":
        return _STORE_KEYS
    return tuple(_SECTIONS[section].model_fields)


def _unknown(file: str, section: str, key: str, is_table: bool) -> str:
    keys = _allowed_keys(section)
    tables = {"": _TOP_TABLES, "scheduler": ("delivery",)}.get(section, ())
    candidates = [*keys, *tables]
    guess = did_you_mean(key, candidates)
    prefix = f"{file}: [{section}] " if section else f"{file}: "
    if is_table and (not guess or guess in tables):
        full = f"{section}.{key}" if section else key
        hint = ""
        if guess:
            hint = f" (did you mean `[{section + '.' if section else ''}{guess}]`?)"
        return f"{file}: unknown section `[{full}]`{hint}"
    hint = f" (did you mean `{guess}`?)" if guess else ""
    return f"{prefix}unknown key `{key}`{hint}"


def _file_settings(
    file: Path, raw: dict[str, Any], env: Mapping[str, str]
) -> tuple[dict[tuple[str, str], _Setting], dict[str, dict[str, Any]], list[str]]:
    """Flatten the parsed file into (section, key) → setting, checking names and expanding
    ``${VAR}``; returns the settings, the providers tables and the problems found."""
    name = str(file)
    settings: dict[tuple[str, str], _Setting] = {}
    providers: dict[str, dict[str, Any]] = {}
    problems: list[str] = []

    def put(section: str, key: str, value: Any) -> None:
        origin = f"{name}: [{section}]" if section else f"{name}:"
        try:
            expanded = _expand_value(value, env, f"{origin} {key}")
        except ConfigError as exc:
            problems.extend(exc.problems)
            return
        written = value if expanded != value else None
        settings[(section, key)] = _Setting(expanded, origin, _has_refs(value), written)

    def walk(section: str, table: dict[str, Any]) -> None:
        subtables = {"": _TOP_TABLES, "scheduler": ("delivery",)}.get(section, ())
        keys = _allowed_keys(section)
        for key, value in table.items():
            full = f"{section}.{key}" if section else key
            if key in subtables:
                if not isinstance(value, dict):
                    problems.append(f"{name}: `{full}` must be a table (`[{full}]`)")
                elif full == "providers":
                    for pname, ptable in value.items():
                        if isinstance(ptable, dict):
                            providers[pname] = ptable
                            problems.extend(
                                check_provider_table(pname, ptable, f"{name}: [providers.{pname}]")
                            )
                        else:
                            problems.append(
                                f"{name}: `providers.{pname}` must be a table "
                                f"(`[providers.{pname}]`)"
                            )
                else:
                    walk(full, value)
            elif key in keys:
                put(section, key, value)
            else:
                problems.append(_unknown(name, section, key, isinstance(value, dict)))

    walk("", raw)
    return settings, providers, problems


def _env_settings(env: Mapping[str, str]) -> dict[tuple[str, str], _Setting]:
    out: dict[tuple[str, str], _Setting] = {}
    for var, (section, key) in _ENV_VARS.items():
        value = env.get(var)
        if value:  # set but empty counts as unset (`SYMBI_ENV= symbi up`)
            out[(section, key)] = _Setting(value, f"environment variable {var}", textual=True)
    return out


def _override_settings(overrides: Mapping[str, Any]) -> dict[tuple[str, str], _Setting]:
    """Flags: ``{"scheduler": {"max_concurrent_jobs": 5}}`` or ``{"scheduler.max_concurrent_jobs":
    5}``; ``store_path`` is an alias of ``store.path``; ``None`` values (flag not given) are
    skipped."""
    flat: dict[str, Any] = {}

    def flatten(prefix: str, table: Mapping[str, Any]) -> None:
        for k, v in table.items():
            dotted = f"{prefix}.{k}" if prefix else k
            is_section = dotted in _SECTIONS or dotted in ("store", "scheduler")
            if isinstance(v, Mapping) and is_section:
                flatten(dotted, v)
            else:
                flat[dotted] = v

    flatten("", overrides)
    out: dict[tuple[str, str], _Setting] = {}
    problems: list[str] = []
    for dotted, value in flat.items():
        if value is None:
            continue
        if dotted == "store_path":
            dotted = "store.path"
        section, _, key = dotted.rpartition(".")
        known = section in ("", "store", *_SECTIONS) and key in _allowed_keys(section)
        if not known:
            everything = [
                f"{sec}.{k}" if sec else k
                for sec in ("", "store", *_SECTIONS)
                for k in _allowed_keys(sec)
            ]
            guess = did_you_mean(dotted, everything)
            hint = f" (did you mean `{guess}`?)" if guess else ""
            problems.append(f"option `{dotted}`: no such setting{hint}")
            continue
        out[(section, key)] = _Setting(value, f"option {dotted}", textual=True)
    if problems:
        raise ConfigError(problems)
    return out


@functools.lru_cache(maxsize=64)
def _adapter(annotation: Any) -> TypeAdapter[Any]:
    return TypeAdapter(annotation)


def _reason(err: Mapping[str, Any]) -> str:
    kind = err["type"]
    ctx = err.get("ctx") or {}
    if kind.startswith("int_"):
        return "expected an integer"
    if kind.startswith("float_"):
        return "expected a number"
    if kind.startswith("bool_"):
        return "expected true or false"
    if kind.startswith("string_"):
        return "expected a string"
    if kind.startswith("list_"):
        return "expected a list"
    if kind in ("dict_type", "model_type"):
        return "expected a table"
    if kind in ("path_type", "is_instance_of"):
        return "expected a path string"
    if kind == "greater_than":
        return f"must be greater than {ctx.get('gt'):g}"
    if kind == "greater_than_equal":
        return f"must be at least {ctx.get('ge'):g}"
    if kind == "less_than_equal":
        return f"must be at most {ctx.get('le'):g}"
    msg = str(err.get("msg", "invalid value"))
    return msg[:1].lower() + msg[1:]


def _describe(setting: _Setting, section: str, key: str, reason: str) -> str:
    value = _render(key, setting.value)
    if setting.written is not None and key not in _SECRET_KEYS:
        value = f"{_render(key, setting.written)} (= {value})"
    if setting.origin.startswith("environment variable") or setting.origin.startswith("option"):
        return f"{setting.origin} = {value}: {reason} (for {_field_name(section, key)})"
    return f"{setting.origin} {key} = {value}: {reason}"


def _annotation(section: str, key: str) -> Any:
    if section == "store":
        return Path
    if section == "":
        return Config.model_fields[key].annotation
    return _SECTIONS[section].model_fields[key].annotation


def load_config(
    path: Path | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """Load the configuration; see the module docstring. Raises :class:`ConfigError` only."""
    env = os.environ if env is None else env
    file = _find_file(path, env)
    settings: dict[tuple[str, str], _Setting] = {}
    providers: dict[str, dict[str, Any]] = {}
    problems: list[str] = []
    if file is not None:
        settings, providers, problems = _file_settings(file, _read_toml(file), env)
    settings.update(_env_settings(env))
    settings.update(_override_settings(overrides or {}))

    # Text from the environment, flags and "${VAR}" strings becomes the field's type here;
    # values written as TOML literals must already have it (strict models below).
    values: dict[tuple[str, str], Any] = {}
    for (section, key), setting in settings.items():
        value = setting.value
        if setting.textual and isinstance(value, str):
            try:
                value = _adapter(_annotation(section, key)).validate_python(value)
            except ValidationError as exc:
                problems.append(_describe(setting, section, key, _reason(exc.errors()[0])))
                continue
        values[(section, key)] = value
    if problems:
        raise ConfigError(problems)

    # $SYMBI_API_KEY adds a key: keys from the file stay valid too.
    api_key = env.get("SYMBI_API_KEY")
    if api_key:
        existing = values.get(("api", "api_keys"), [])
        if isinstance(existing, list):
            keys = list(existing)
            plain = [k.get_secret_value() if isinstance(k, SecretStr) else k for k in keys]
            if api_key not in plain:
                keys.append(SecretStr(api_key))
            values[("api", "api_keys")] = keys

    data: dict[str, Any] = {"providers": providers, "source": file}
    nested: dict[str, dict[str, Any]] = {}
    for (section, key), value in values.items():
        if section == "":
            data[key] = value
        elif section == "store":
            data["store_path"] = value
        else:
            nested.setdefault(section, {})[key] = value
    for section, table in nested.items():
        data["delivery" if section == "scheduler.delivery" else section] = table

    try:
        return Config(**data)
    except ValidationError as exc:
        raise ConfigError(_validation_problems(exc, settings)) from None


def _validation_problems(
    exc: ValidationError, settings: Mapping[tuple[str, str], _Setting]
) -> list[str]:
    problems = []
    for err in exc.errors():
        loc = [str(p) for p in err["loc"] if not isinstance(p, int)]
        if not loc:
            problems.append(_reason(err))
            continue
        if loc[0] == "store_path":
            section, key = "store", "path"
        elif len(loc) >= 2 and loc[0] in ("scheduler", "delivery", "api", "agentpin"):
            section = "scheduler.delivery" if loc[0] == "delivery" else loc[0]
            key = loc[1]
        else:
            section, key = "", loc[0]
        setting = settings.get((section, key))
        if setting is None:  # cannot happen for user input; say what we know
            problems.append(f"{_field_name(section, key)}: {_reason(err)}")
        else:
            problems.append(_describe(setting, section, key, _reason(err)))
    return problems


__all__ = [
    "DEFAULT_CONFIG_FILE",
    "ENV_VARS",
    "PROVIDER_KEYS",
    "PROVIDER_KINDS",
    "AgentPinConfig",
    "ApiConfig",
    "Config",
    "ConfigError",
    "DeliveryConfig",
    "SchedulerConfig",
    "check_provider_table",
    "load_config",
]
