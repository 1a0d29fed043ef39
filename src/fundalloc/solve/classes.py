"""Phase 1, aggregate: loans that the problem cannot tell apart, found by factorising whole columns.

Loans that agree on every discrete thing a rule reads (eligibility for each route, segment
membership, rate-grid tier, obligor slot, and expected life when it takes few values) get one
*class* id. Inside
a class, loans still differ on continuous fields (weighted-average fields, and life when it is
continuous): the *bins* the refinement starts from cut each class by quantiles of those fields.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from ..instance import ConcFamily, Instance

LIFE = "__life__"  # the name of expected life among the continuous fields


def dense(a: np.ndarray) -> tuple[np.ndarray, int]:
    """Codes by first appearance; a missing value is a value of its own."""
    codes, uniq = pd.factorize(a, use_na_sentinel=False)
    return np.asarray(codes, dtype=np.int64), len(uniq)


_COUNTDOWN: dict[int, np.ndarray] = {}


def _countdown(n: int) -> np.ndarray:
    """``n-1, ..., 0`` (a view of one cached array per size: big days ask for it often)."""
    if n not in _COUNTDOWN:
        _COUNTDOWN.clear()
        _COUNTDOWN[n] = np.arange(n, dtype=np.int64)
    return _COUNTDOWN[n][::-1]


def _dense_radix(code: np.ndarray, k: int) -> tuple[np.ndarray, int]:
    """Dense ids of codes in ``[0, k)`` in order of first appearance, as a factorisation gives,
    from a presence table and its running count: no hashing, several times faster on millions
    of loans."""
    present = np.zeros(k, dtype=bool)
    present[code] = True
    remap = np.cumsum(present, dtype=np.int64) - 1
    ids = remap[code]
    m = int(remap[-1]) + 1
    first = np.empty(m, dtype=np.int64)
    first[ids[::-1]] = _countdown(len(ids))  # the last write per id is its first loan
    rank = np.empty(m, dtype=np.int64)
    rank[np.argsort(first)] = np.arange(m)
    return rank[ids], m


def _small_codes(key: np.ndarray) -> tuple[np.ndarray, int]:
    """A key as codes ``0..k-1`` (k its range) when its range is small; else by factorising.

    Unsigned 64-bit keys (the eligibility words of days with more than 56 routes) are compared
    as unsigned throughout: their range is taken in Python integers, never as int64."""
    if key.dtype.kind in "iu" and key.dtype.itemsize <= 8:
        lo, hi = int(key.min()), int(key.max())
        if hi - lo < 1 << 24:
            if lo == 0 and np.can_cast(key.dtype, np.int64, "safe"):
                return key, hi + 1  # used as it is (no copy)
            if key.dtype == np.uint64:
                return (key - np.uint64(lo)).astype(np.int64), hi - lo + 1
            return np.subtract(key, lo, dtype=np.int64), hi - lo + 1
        if key.dtype == np.uint64:
            return dense(key.view(np.int64))  # same bits, same partition
    return dense(key)


def combine_keys(keys: list[np.ndarray], n: int) -> tuple[np.ndarray, int]:
    """One dense id per distinct tuple of the key columns (exact, no hashing collisions).

    Mixed-radix arithmetic on the key codes, factorised (hashed) only when the radix product
    would overflow; ids in order of first appearance, so they depend only on the partition the
    keys make and on the order of the loans, not on how the keys are composed.
    """
    if not n:
        return np.zeros(0, dtype=np.int64), 0
    code: np.ndarray | None = None
    k = 1
    for key in keys:
        kc, kn = _small_codes(np.asarray(key))
        if code is None:
            code, k = np.array(kc, dtype=np.int64), kn  # a copy: the loop works in place
            continue
        if k * kn >= 1 << 62:
            code, k = dense(code)
        np.multiply(code, kn, out=code)
        code += kc
        k *= kn
    if code is None:
        return np.zeros(n, dtype=np.int64), 1
    return _dense_radix(code, k) if k <= max(4 * n, 1 << 20) else dense(code)


def loan_classes(inst: Instance) -> tuple[np.ndarray, int, list[str]]:
    """Class id per loan, and the continuous fields left to the bin refinement."""
    n = inst.n
    keys: list[np.ndarray] = []
    bits = np.packbits(inst.elig, axis=1)
    pad = (-bits.shape[1]) % 8
    if pad:
        bits = np.concatenate([bits, np.zeros((n, pad), dtype=np.uint8)], axis=1)
    words = np.ascontiguousarray(bits).view(np.uint64)
    keys.extend(words[:, j] for j in range(words.shape[1]))
    # A loan's segment in a family matters only where it is eligible for the family's route. Loans
    # of one class share their eligibility, so families with the same filter and ``per`` column
    # (the same limit at several funders) need one key between them: the segment wherever the
    # loan is eligible for any of their routes. Same partition, a pass per distinct limit.
    groups: dict[str, tuple[np.ndarray, ConcFamily]] = {}
    for fam in inst.conc:
        sig = json.dumps(fam.spec.model_dump(mode="json", include={"where", "per"}), sort_keys=True)
        if sig in groups:
            groups[sig][0][:] |= inst.elig[:, fam.route]
        else:
            groups[sig] = (np.array(inst.elig[:, fam.route], copy=True), fam)  # (a copy: written to above)
    for anywhere, fam in groups.values():
        member = anywhere & fam.where
        keys.append(np.where(member, 0 if fam.per_codes is None else fam.per_codes, -1))
    # a graded route prices by tier: a class's loans share theirs wherever they are eligible
    for r, t in inst.tier.items():
        keys.append(np.where(inst.elig[:, r], t, -1))
    for gc in inst.group_conc:  # a group's segment, wherever the loan may go to a member
        anywhere = inst.elig[:, list(gc.members)].any(axis=1)
        keys.append(np.where(anywhere & gc.where, 0 if gc.per_codes is None else gc.per_codes, -1))
    if inst.obligor_rows:
        keys.append(inst.obligor_slot)
    continuous = list(inst.fields)
    if n:
        life_codes, nlife = dense(inst.life)
        if nlife <= 256:
            keys.append(life_codes)
        else:
            continuous.append(LIFE)
    cls, k = combine_keys(keys, n)
    return cls, k, continuous


def field_values(inst: Instance, name: str) -> np.ndarray:
    return inst.life if name == LIFE else inst.fields[name]


def initial_bins(inst: Instance, cls: np.ndarray, continuous: list[str], q: int) -> tuple[np.ndarray, int]:
    """The classes cut by ``q`` quantile bins of each continuous field."""
    keys = [cls]
    if q > 1:
        for name in continuous:
            v = field_values(inst, name)
            finite = v[np.isfinite(v)]
            if len(finite) == 0:
                continue
            edges = np.unique(np.quantile(finite, np.linspace(0, 1, q + 1)[1:-1]))
            keys.append(np.searchsorted(edges, np.nan_to_num(v, nan=-np.inf)))
    return combine_keys(keys, inst.n)


def representatives(ids: np.ndarray, k: int) -> np.ndarray:
    """A loan of each id: the first one."""
    rep = np.zeros(k, dtype=np.int64)
    rep[ids[::-1]] = np.arange(len(ids))[::-1]
    return rep
