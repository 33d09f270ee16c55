"""Typed fedsafe settings, read from Flower's run config (`fedsafe.*` keys) and sent to clients.

One schema drives parsing, validation, defaults, the ConfigRecord round trip and the docs table,
so a key cannot be valid in one place and unknown in another.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

PREFIX = "fedsafe."
AUTO = "auto"

Scalar = bool | int | float | str


class ConfigError(ValueError):
    """A `fedsafe.*` setting is unknown, of the wrong type or out of range; names the key."""


def _opt(
    default: Any,
    help: str,
    *,
    check: Callable[[Any], bool] | None = None,
    rule: str = "",
    choices: tuple[str, ...] = (),
    auto: bool = False,
) -> Any:
    """Declare one setting: its default, one-line help and validity rule."""
    meta = {"help": help, "check": check, "rule": rule, "choices": choices, "auto": auto}
    return field(default=default, metadata=meta)


def _positive(x: float) -> bool:
    return x > 0


def _non_negative(x: float) -> bool:
    return x >= 0


def _open_unit(x: float) -> bool:
    return 0 < x < 1


@dataclass(frozen=True)
class SanitizeConfig:
    """On-device sanitization (FedDetox): score local samples and rewrite unsafe ones."""

    enabled: bool = _opt(True, "Run the on-device sanitizer before local training.")
    action: str = _opt(
        "replace",
        "What to do with an unsafe sample: replace (refusal becomes chosen), drop, flag.",
        choices=("replace", "drop", "flag"),
    )
    threshold: float | None = _opt(
        None,
        "Unsafe-probability threshold; 'auto' uses the student's calibrated threshold.",
        check=_open_unit,
        rule="in (0, 1)",
        auto=True,
    )
    student: str = _opt("", "Path to a student classifier folder; empty = the shipped one.")
    seed: int = _opt(0, "Seed for the per-sample choice of refusal template.")


@dataclass(frozen=True)
class PrivacyConfig:
    """Sample-level DP-SGD on the LoRA adapter; the privacy unit is one training record."""

    enabled: bool = _opt(False, "Train with DP-SGD (Opacus) and enforce the budget.")
    epsilon: float = _opt(8.0, "Total epsilon budget for the whole plan.", check=_positive, rule="> 0")
    delta: float = _opt(1e-5, "Delta of the (epsilon, delta) guarantee.", check=_open_unit, rule="in (0, 1)")
    max_grad_norm: float = _opt(1.0, "Per-record clipping norm C.", check=_positive, rule="> 0")
    noise_multiplier: float | None = _opt(
        None,
        "Noise multiplier sigma; 'auto' derives it so the whole plan fits epsilon; pinned at the first private round.",
        check=_positive,
        rule="> 0 (sigma 0 has no finite epsilon)",
        auto=True,
    )
    accountant: str = _opt("prv", "Opacus accountant.", choices=("prv", "rdp"))
    rounds: int = _opt(10, "Rounds this client expects to join (the plan).", check=_positive, rule="> 0")
    local_steps: int = _opt(10, "DP-SGD steps per round (the plan; the DP path runs exactly this many); pinned at the first private round.", check=_positive, rule="> 0")
    batch_size: int = _opt(8, "Target batch size: sample rate q = 1/ceil(records / batch-size), expected batch records*q (<= this); pinned at the first private round.", check=_positive, rule="> 0")


@dataclass(frozen=True)
class ClientDPConfig:
    """Optional client-level DP through Flower's own fixed-clipping wrappers."""

    mode: str = _opt("none", "Client-level DP: none, server (server-side clipping), client.", choices=("none", "server", "client"))
    noise_multiplier: float = _opt(1.0, "Noise multiplier of the client-level Gaussian mechanism.", check=_non_negative, rule=">= 0")
    clipping_norm: float = _opt(1.0, "Clipping norm of each client's update.", check=_positive, rule="> 0")
    num_sampled_clients: int = _opt(0, "Clients sampled per round (required by Flower's wrapper when mode != none).", check=_non_negative, rule=">= 0")
    accounting: bool = _opt(False, "Report client-level epsilon with Flower's RdpAccountant (needs FedAvg, equal weights, all sampled clients replying).")
    delta: float = _opt(1e-5, "Delta of the client-level epsilon that Flower's accountant reports.", check=_open_unit, rule="in (0, 1)")
    max_epsilon: float | None = _opt(None, "Stop the run before a round would pass this client-level epsilon (needs accounting); 'auto' = no cap.", check=_positive, rule="> 0", auto=True)


@dataclass(frozen=True)
class SecAggConfig:
    """Secure aggregation of adapters: the server learns only the sum."""

    mode: str = _opt("none", "none, secagg+ (masking) or ckks (TenSEAL).", choices=("none", "secagg+", "ckks"))
    neighbours: int = _opt(0, "SecAgg+ graph degree k; 0 = 2*ceil(log2 n), at least ceil(log2 n), n-1 = classic SecAgg.", check=_non_negative, rule=">= 0")
    min_survivors: float = _opt(0.5, "Reconstruction threshold t as a fraction of the sampled clients.", check=lambda x: 0 < x <= 1, rule="in (0, 1]")
    clip_range: float = _opt(0.5, "Update values are clipped to [-r, r] before quantisation.", check=_positive, rule="> 0")
    bits: int = _opt(24, "Fixed-point bits of the weighted update (the uint32 sum cannot overflow for bits <= 24).", check=lambda x: 2 <= x <= 24, rule="in [2, 24]")
    timeout: float = _opt(120.0, "Seconds to wait for each extra SecAgg stage.", check=_positive, rule="> 0")
    ckks_context: str = _opt("", "Path to the CKKS context (secret on clients, public on the server).")


@dataclass(frozen=True)
class ValidateConfig:
    """Server-side checks on every train reply."""

    max_update_norm: float = _opt(0.0, "Drop replies whose update L2 norm exceeds this; 0 = no bound.", check=_non_negative, rule=">= 0")
    min_replies: int = _opt(1, "Aggregate only when at least this many valid replies remain.", check=_positive, rule="> 0")


_SECTIONS: dict[str, type] = {
    "sanitize": SanitizeConfig,
    "privacy": PrivacyConfig,
    "client-dp": ClientDPConfig,
    "secagg": SecAggConfig,
    "validate": ValidateConfig,
}


def _key(section: str, name: str) -> str:
    return f"{PREFIX}{section}.{name.replace('_', '-')}"


def _parse_value(key: str, f: dataclasses.Field, value: Any) -> Any:
    """Coerce one raw value to the field's type or raise a ConfigError naming the key."""
    meta = f.metadata
    kind = type(f.default) if f.default is not None else float
    if meta["auto"] and (value is None or value == AUTO):
        return None
    if kind is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        if not -(2**63) <= value < 2**63:  # Flower's ConfigRecord carries int64
            raise ConfigError(f"{key}: {value} does not fit in a 64-bit integer")
    elif kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            hint = " or 'auto'" if meta["auto"] else ""
            raise ConfigError(f"{key}: expected a number{hint}, got {value!r}")
        value = float(value)
        if not math.isfinite(value):
            raise ConfigError(f"{key}: expected a finite number, got {value!r}")
    elif kind is str and not isinstance(value, str):
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    if meta["choices"] and value not in meta["choices"]:
        raise ConfigError(f"{key}: {value!r} is not one of {', '.join(meta['choices'])}")
    if meta["check"] is not None and not meta["check"](value):
        raise ConfigError(f"{key}: {value!r} is out of range (must be {meta['rule']})")
    return value


@dataclass(frozen=True)
class FedSafeConfig:
    """All fedsafe settings. Build with `from_run_config`; send with `to_config_record`."""

    sanitize: SanitizeConfig = field(default_factory=SanitizeConfig)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)
    client_dp: ClientDPConfig = field(default_factory=ClientDPConfig)
    secagg: SecAggConfig = field(default_factory=SecAggConfig)
    validate: ValidateConfig = field(default_factory=ValidateConfig)

    @classmethod
    def from_run_config(cls, run_config: Mapping[str, Scalar]) -> FedSafeConfig:
        """Read the `fedsafe.*` keys of a Flower run config (other keys are ignored)."""
        if not isinstance(run_config, Mapping):
            raise ConfigError(f"expected a run config mapping of keys to values, got {type(run_config).__name__}")
        given = {k: v for k, v in run_config.items() if k.startswith(PREFIX)}
        unknown = sorted(set(given) - set(valid_keys()))
        if unknown:
            raise ConfigError(
                f"unknown key {unknown[0]!r}; valid keys are: {', '.join(valid_keys())}"
            )
        sections = {}
        for section, section_cls in _SECTIONS.items():
            values = {}
            for f in dataclasses.fields(section_cls):
                key = _key(section, f.name)
                if key in given:
                    values[f.name] = _parse_value(key, f, given[key])
            sections[section.replace("-", "_")] = section_cls(**values)
        cfg = cls(**sections)
        cfg._check_cross_field()
        return cfg

    from_config_record = from_run_config

    def _check_cross_field(self) -> None:
        if self.client_dp.mode != "none" and self.client_dp.num_sampled_clients == 0:
            raise ConfigError(
                f"{_key('client-dp', 'num_sampled_clients')}: must be set (> 0) "
                f"when {_key('client-dp', 'mode')} is {self.client_dp.mode!r}"
            )
        if self.client_dp.max_epsilon is not None and not (self.client_dp.mode != "none" and self.client_dp.accounting):
            raise ConfigError(
                f"{_key('client-dp', 'max_epsilon')}: a cap needs Flower's accountant; "
                f"set {_key('client-dp', 'accounting')} = true (and a {_key('client-dp', 'mode')})"
            )

    def to_flat(self) -> dict[str, Scalar]:
        """Every key with its value (None written as 'auto'), ready for a ConfigRecord."""
        out: dict[str, Scalar] = {}
        for section in _SECTIONS:
            obj = getattr(self, section.replace("-", "_"))
            for f in dataclasses.fields(obj):
                value = getattr(obj, f.name)
                out[_key(section, f.name)] = AUTO if value is None else value
        return out

    def to_config_record(self) -> Any:
        """The settings as a Flower ConfigRecord, merged into each train message's config."""
        from flwr.app import ConfigRecord

        return ConfigRecord(self.to_flat())


def valid_keys() -> list[str]:
    """All accepted `fedsafe.*` keys, in schema order."""
    return [_key(s, f.name) for s, c in _SECTIONS.items() for f in dataclasses.fields(c)]


def describe_keys() -> list[tuple[str, str, str]]:
    """(key, default, help) for every setting: the README's configuration table."""
    rows = []
    for section, section_cls in _SECTIONS.items():
        for f in dataclasses.fields(section_cls):
            default = AUTO if f.default is None else f.default
            rows.append((_key(section, f.name), repr(default), f.metadata["help"]))
    return rows
