"""Estimator parameters: their constraints, option objects in model files, retired names.

- :func:`check_parameters` checks every parameter against the class's
  ``_parameter_constraints`` (scikit-learn's convention) when ``fit`` starts,
  so a bad value fails at once with a message naming the parameter, the value
  and what is allowed, never deep inside training or at ``recommend`` time.
- Option objects (``schedule=SGDR(...)``, ``averaging=EMA(...)``,
  ``continuous_encoding=PLR(...)``) are written to model files as their class
  name and constructor arguments (:func:`encode_parameters`), and rebuilt only
  from :data:`OPTION_CLASSES` (:func:`decode_parameters`): loading never
  constructs anything else.
- The parameters that only mattered under another option (``cycle_len``,
  ``ema_decay``, ``n_bins``, ...) left the signatures for those objects; for
  one release the old names still work, with a ``FutureWarning``
  (:func:`accepts_retired_parameters`, :func:`fold_retired_parameters`).
"""

from __future__ import annotations

import functools
import inspect
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from numbers import Integral, Real
from pathlib import Path

import numpy as np

from tabembed import defaults
from tabembed.models.numeric_embeddings import PLR, PiecewiseLinear
from tabembed.training import schedules
from tabembed.training.averaging import EMA, SWA, FastGeometricEnsemble, SnapshotEnsemble

__all__ = [
    "OPTION_CLASSES",
    "RETIRED",
    "Interval",
    "Options",
    "accepts_retired_parameters",
    "check_parameters",
    "decode_parameters",
    "encode_parameters",
    "store_parameters",
]


# ------------------------------------------------------------ constraints

@dataclass(frozen=True)
class Interval:
    """Numbers of ``kind`` (Integral or Real) between ``low`` and ``high`` (None: unbounded)."""

    kind: type
    low: float | None = None
    high: float | None = None
    closed: str = "both"        # "both", "left", "right" or "neither"
    description: str | None = None

    def accepts(self, value) -> bool:
        if isinstance(value, bool) or not isinstance(value, self.kind | np.number):
            return False
        if self.kind is Integral and not isinstance(value, Integral | np.integer):
            return False
        if not math.isfinite(value):
            return False
        if self.low is not None and (value < self.low or (
                value == self.low and self.closed in ("right", "neither"))):
            return False
        return self.high is None or not (value > self.high or (
            value == self.high and self.closed in ("left", "neither")))

    def __str__(self) -> str:
        if self.description:
            return self.description
        name = "an integer" if self.kind is Integral else "a number"
        if self.low is None and self.high is None:
            return name
        left = "[" if self.closed in ("both", "left") and self.low is not None else "("
        right = "]" if self.closed in ("both", "right") and self.high is not None else ")"
        low = "-inf" if self.low is None else f"{self.low:g}"
        high = "inf" if self.high is None else f"{self.high:g}"
        return f"{name} in {left}{low}, {high}{right}"


@dataclass(frozen=True)
class Options:
    """One of a fixed set of values (strings, None, booleans)."""

    values: tuple

    def accepts(self, value) -> bool:
        return any(value is v or (isinstance(value, str) and value == v) for v in self.values)

    def __str__(self) -> str:
        return "one of " + ", ".join(repr(v) for v in self.values)


@dataclass(frozen=True)
class InstanceOf:
    """An instance of one of ``types``, described as ``name``."""

    types: tuple
    name: str

    def accepts(self, value) -> bool:
        return isinstance(value, self.types) and not (
            isinstance(value, bool) and bool not in self.types)

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True)
class Satisfies:
    """A value for which ``test`` is true, described as ``name``."""

    test: Callable
    name: str

    def accepts(self, value) -> bool:
        try:
            return bool(self.test(value))
        except (TypeError, ValueError):
            return False

    def __str__(self) -> str:
        return self.name


def _widths(value) -> bool:
    return isinstance(value, list | tuple) and all(
        isinstance(w, Integral | np.integer) and not isinstance(w, bool) and w >= 1
        for w in value)


def _increasing_pair(value) -> bool:
    return (isinstance(value, list | tuple) and len(value) == 2
            and all(isinstance(v, int | float | np.number) for v in value)
            and value[0] < value[1])


def _names(value) -> bool:
    return isinstance(value, list | tuple) and all(
        isinstance(c, str | int | np.integer) for c in value)


# Constraints shared by several estimators.
POSITIVE_INT = Interval(Integral, 1, None)
FRACTION = Interval(Real, 0, 1, closed="left")
OPEN_FRACTION = Interval(Real, 0, 1, closed="neither")
NON_NEGATIVE = Interval(Real, 0, None)
BOOLEAN = InstanceOf((bool, np.bool_), "a boolean")
AUTO = Options(("auto",))
WIDTHS = Satisfies(_widths, "a tuple of positive integers")
COLUMN_NAMES = Satisfies(_names, "a list of column names")
RANGE = Satisfies(_increasing_pair, "a (low, high) pair")
NONE = Options((None,))
RANDOM_STATE = InstanceOf((Integral, np.integer, np.random.RandomState, np.random.Generator,
                           type(None)), "None, an int, a numpy RandomState or Generator")
DEVICE = InstanceOf((str,), "a device name ('auto', 'cpu', 'cuda', 'cuda:1', 'mps')")
VERBOSE = Interval(Integral, 0, None)


def check_parameters(estimator, constraints: dict) -> None:
    """Raise ``ValueError`` for the first parameter of ``estimator`` that none of its
    ``constraints`` (name -> list of constraints) accepts."""
    for name, value in estimator.get_params(deep=False).items():
        allowed = constraints.get(name)
        if allowed is None or any(c.accepts(value) for c in allowed):
            continue
        described = "; or ".join(str(c) for c in allowed)
        raise ValueError(f"{type(estimator).__name__}: {name} must be {described}; "
                         f"got {value!r}")


# ------------------------------------------------------------ option objects in files

OPTION_CLASSES = {cls.__name__: cls for cls in (
    schedules.Constant, schedules.StepDecay, schedules.ExponentialDecay,
    schedules.InverseTimeDecay, schedules.CyclicalLR, schedules.OneCycle, schedules.SGDR,
    schedules.SlantedTriangular, schedules.CyclicalLinear,
    EMA, SWA, SnapshotEnsemble, FastGeometricEnsemble, PLR, PiecewiseLinear)}


def constructor_arguments(option) -> dict:
    """The keyword arguments that rebuild ``option`` (read back from its attributes)."""
    arguments = {}
    for name, parameter in inspect.signature(type(option).__init__).parameters.items():
        if name == "self" or parameter.kind in (parameter.VAR_POSITIONAL,
                                                parameter.VAR_KEYWORD):
            continue
        if not hasattr(option, name):
            raise TypeError(f"{type(option).__name__} keeps no attribute {name!r}; it cannot "
                            "be written to a model file")
        arguments[name] = getattr(option, name)
    return arguments


def encode_parameters(params: dict) -> dict:
    """Parameters as JSON-ready values: option objects become ``{"option": class name,
    "arguments": {...}}``."""
    def encoded(value):
        if type(value).__name__ in OPTION_CLASSES and \
                OPTION_CLASSES[type(value).__name__] is type(value):
            return {"option": type(value).__name__, "arguments": {
                k: str(v) if isinstance(v, Path) else encoded(v)
                for k, v in constructor_arguments(value).items()}}
        if isinstance(value, tuple):
            return [encoded(v) for v in value]
        return value

    return {name: encoded(value) for name, value in params.items()}


def decode_parameters(params: dict) -> dict:
    """:func:`encode_parameters` undone; only :data:`OPTION_CLASSES` are ever built."""
    def decoded(value):
        if isinstance(value, dict) and set(value) == {"option", "arguments"}:
            cls = OPTION_CLASSES.get(value["option"])
            if cls is None or not isinstance(value["arguments"], dict):
                raise ValueError(f"unknown option {value['option']!r} in the model file "
                                 f"(known: {sorted(OPTION_CLASSES)})")
            return cls(**{k: decoded(v) for k, v in value["arguments"].items()})
        return value

    return {name: decoded(value) for name, value in params.items()}


# ------------------------------------------------------------ retired names

def store_parameters(estimator, values: dict) -> None:
    """``__init__``'s whole job (scikit-learn's contract): keep each parameter as given.

    Call it as ``store_parameters(self, locals())`` first thing in ``__init__``.
    """
    for name, value in values.items():
        if name not in ("self", "__class__"):
            setattr(estimator, name, value)


def accepts_retired_parameters(init):
    """Decorate ``__init__`` so that it also takes the retired names (:data:`RETIRED`) for
    one release: each is folded into the object that replaced it, with a
    ``FutureWarning``. The signature scikit-learn reads stays the explicit one."""
    @functools.wraps(init)
    def wrapper(self, **params):
        retired = {k: params.pop(k) for k in list(params) if k in RETIRED}
        init(self, **params)
        if retired:
            for name, value in fold_retired_parameters(self, retired).items():
                setattr(self, name, value)

    return wrapper


# Which object each retired parameter went into (the estimator's parameter holding it).
RETIRED = {"cycle_len": "schedule", "cycle_mult": "schedule", "ema_decay": "averaging",
           "swa_start": "averaging", "swa_lr": "averaging", "n_bins": "continuous_encoding",
           "d_embedding": "continuous_encoding", "n_frequencies": "continuous_encoding",
           "frequency_init_scale": "continuous_encoding"}


def fold_retired_parameters(estimator, retired: dict) -> dict:
    """The new values of the parameters that hold ``retired``'s settings (a FutureWarning
    each); settings that had no effect under the estimator's current options are dropped."""
    cls = type(estimator).__name__
    params = estimator.get_params(deep=False)
    unknown = [n for n in retired if n not in RETIRED or RETIRED[n] not in params]
    if unknown:
        raise TypeError(f"{cls}.__init__() got an unexpected keyword argument {unknown[0]!r}")
    changes = {}
    for holder, build in (("schedule", _schedule), ("averaging", _averaging),
                          ("continuous_encoding", _encoding)):
        given = {n: v for n, v in retired.items() if RETIRED[n] == holder}
        if not given:
            continue
        replacement = build(params[holder], given)
        names = ", ".join(sorted(given))
        if replacement is None:
            warnings.warn(f"{cls}: {names} is deprecated and has no effect with "
                          f"{holder}={params[holder]!r}; it will be removed in the next "
                          "release", FutureWarning, stacklevel=3)
            continue
        warnings.warn(f"{cls}: {names} is deprecated and will be removed in the next release; "
                      f"pass {holder}={replacement!r} instead", FutureWarning, stacklevel=3)
        changes[holder] = replacement
    return changes


def _schedule(current, given):
    if isinstance(current, schedules.SGDR):
        start = {"cycle_len": current.cycle_len, "cycle_mult": current.cycle_mult,
                 "min_fraction": current.min_fraction}
    elif isinstance(current, str) and current == "sgdr":
        start = {"cycle_len": defaults.SGDR_CYCLE_LEN, "cycle_mult": defaults.SGDR_CYCLE_MULT}
    else:
        return None
    return schedules.SGDR(**{**start, **given})


def _averaging(current, given):
    if isinstance(current, EMA) or (isinstance(current, str) and current == "ema"):
        decay = given.get("ema_decay")
        if decay is None:
            return None
        return EMA(decay=decay, warmup=getattr(current, "warmup", True))
    if isinstance(current, SWA) or (isinstance(current, str) and current == "swa"):
        start = getattr(current, "start", defaults.SWA_START)
        rate = getattr(current, "swa_lr", defaults.SWA_LR)
        if "swa_start" not in given and "swa_lr" not in given:
            return None
        return SWA(start=given.get("swa_start", start), swa_lr=given.get("swa_lr", rate),
                   anneal_epochs=getattr(current, "anneal_epochs", 1))
    return None


def _encoding(current, given):
    if isinstance(current, PiecewiseLinear) or (isinstance(current, str)
                                                and current == "piecewise_linear"):
        if "n_bins" not in given:
            return None
        return PiecewiseLinear(n_bins=given["n_bins"])
    plr_names = ("d_embedding", "n_frequencies", "frequency_init_scale")
    if not any(n in given for n in plr_names):
        return None
    if isinstance(current, PLR):
        start = {"n_frequencies": current.n_frequencies, "d_embedding": current.d_embedding,
                 "frequency_init_scale": current.frequency_init_scale, "lite": current.lite}
    elif isinstance(current, str) and current in ("auto", "plr", "plr_lite"):
        start = {"lite": current == "plr_lite"}
    else:
        return None
    return PLR(**{**start, **{n: given[n] for n in plr_names if n in given}})
