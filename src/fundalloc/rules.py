"""Vectorised evaluation of eligibility and segment rules on any column and any values.

A column is factorised once; a list rule is evaluated on its distinct values and broadcast back
through the codes, so a rule costs one gather per loan whatever the cardinality. A missing value
fails every rule (contract.md, "Missing values").
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import pandas as pd

from .terms import InRule, NotInRule, RangeRule, Rule


class RuleError(ValueError):
    """A rule that cannot be applied to its column (e.g. a range on text)."""


class ColumnView:
    """Caches per-column factorisations and numeric views of one table."""

    def __init__(self, table: pd.DataFrame):
        self.table = table
        self.n = len(table)
        self._codes: dict[str, tuple[np.ndarray, pd.Index]] = {}
        self._numeric: dict[str, np.ndarray] = {}
        self._masks: dict[tuple[str, str], np.ndarray] = {}

    def has(self, column: str) -> bool:
        return column in self.table.columns

    def is_numeric(self, column: str) -> bool:
        dt = self.table[column].dtype
        return pd.api.types.is_numeric_dtype(dt) and not pd.api.types.is_bool_dtype(dt)

    def codes(self, column: str) -> tuple[np.ndarray, pd.Index]:
        """Integer codes (-1 for missing) and the distinct values of a column."""
        if column not in self._codes:
            codes, uniques = pd.factorize(self.table[column], use_na_sentinel=True)
            # the narrowest type: every rule on the column is a gather through these codes
            narrow = np.int16 if len(uniques) < 1 << 15 else np.int32 if len(uniques) < 1 << 31 else np.int64
            self._codes[column] = (np.asarray(codes).astype(narrow, copy=False), pd.Index(uniques))
        return self._codes[column]

    def numeric(self, column: str) -> np.ndarray:
        if column not in self._numeric:
            s = self.table[column]
            if self.is_numeric(column):
                vals = s.to_numpy(dtype="float64", na_value=np.nan)
            else:
                vals = pd.to_numeric(s, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
                if (np.isnan(vals) & s.notna().to_numpy()).any():
                    raise RuleError(f"column '{column}' is not numeric, but a range rule reads it")
            self._numeric[column] = vals
        return self._numeric[column]

    def _value_mask(self, column: str, values: tuple) -> np.ndarray:
        """Mask of rows whose value is in ``values`` (missing -> False)."""
        if self.is_numeric(column):
            try:
                wanted = np.array([float(v) for v in values], dtype="float64")
            except (TypeError, ValueError):
                raise RuleError(
                    f"column '{column}' is numeric, but the rule lists non-numeric values {list(values)}"
                ) from None
            return np.isin(self.numeric(column), wanted)
        codes, uniques = self.codes(column)
        wanted_s = {str(v) for v in values}
        hit = np.fromiter((str(u) in wanted_s for u in uniques), dtype=bool, count=len(uniques))
        hit = np.append(hit, False)  # code -1 -> the appended False
        return hit[codes]

    def present(self, column: str) -> np.ndarray:
        return self.table[column].notna().to_numpy()

    def mask(self, column: str, rule: Rule) -> np.ndarray:
        """Rows that satisfy ``rule`` on ``column`` (funders often repeat a rule: computed once)."""
        key = (column, repr(rule))
        if key not in self._masks:
            self._masks[key] = self._mask(column, rule)
            self._masks[key].flags.writeable = False
        return self._masks[key]

    def _mask(self, column: str, rule: Rule) -> np.ndarray:
        if isinstance(rule, InRule):
            return self._value_mask(column, rule.values)
        if isinstance(rule, NotInRule):
            return self.present(column) & ~self._value_mask(column, rule.not_in)
        if isinstance(rule, RangeRule):
            vals = self.numeric(column)
            ok = ~np.isnan(vals)
            if rule.min is not None:
                ok &= vals >= rule.min
            if rule.max is not None:
                ok &= vals <= rule.max
            return ok
        raise RuleError(f"unknown rule {rule!r}")  # pragma: no cover

    def all_of(self, rules: Mapping[str, Rule]) -> np.ndarray:
        out = np.ones(self.n, dtype=bool)
        for column, rule in rules.items():
            out &= self.mask(column, rule)
        return out


def missing_columns(rules: Mapping[str, Rule], view: ColumnView) -> list[str]:
    return [c for c in rules if not view.has(c)]
