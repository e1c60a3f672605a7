"""Proxy input sizes and cost matching: `proxy_input_size` (a rule's own size times a scale) and
`phi_for_budget`, the largest phi of a rule whose exact MACs fit a budget."""

from __future__ import annotations

import math
from pathlib import Path

from .config import BUDGET_PHI_STEP, MIN_PROXY_INPUT, NETWORK_STRIDE, PHI_DECIMALS
from .scaling_config import generate_config
from .scaling_rule import ScalingRule, get_rule


def proxy_input_size(native: int, scale: float, multiple: int = NETWORK_STRIDE) -> int:
    """``native * scale`` rounded to the nearest multiple of the network stride, never below 64.

    A proxy that keeps each rule's own resolution: resolution-scaling rules then still differ in
    input size during cheap training, as they would at full size.
    """
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale) or scale <= 0:
        raise ValueError(f"resolution_scale must be a positive real number, got {scale!r}; e.g. 0.25")
    return max(MIN_PROXY_INPUT, int(math.floor(native * scale / multiple + 1 / 2)) * multiple)


def _macs_at(phi: float, rule: ScalingRule, resolution_scale: float, keypoints: str = "coco17") -> int:
    from .complexity import profile  # costing sits above the pure rules; only this entry point needs it

    cfg = generate_config(phi, rule, keypoints)
    return profile(cfg, proxy_input_size(cfg.input_size, resolution_scale)).macs


def phi_for_budget(macs: float, rule: str | Path | ScalingRule = "efficienthrnet",
                   resolution_scale: float = 1.0, keypoints: str = "coco17") -> float:
    """The largest phi on a 0.01 grid inside the rule's range whose exact MACs fit ``macs``.

    MACs are counted by `efficienthrnet.complexity.profile` at the input size the model would run
    at: the rule's own resolution times ``resolution_scale`` (see `proxy_input_size`). Every rule's
    cost is monotone in phi (a smaller phi never gives a larger model), so a bisection over the
    grid is exact. Raises ValueError naming the rule and its cheapest and dearest models' MACs
    when the budget lies outside them.
    """
    rule = get_rule(rule)
    if isinstance(macs, bool) or not isinstance(macs, (int, float)) or not math.isfinite(macs) or macs <= 0:
        raise ValueError(f"a MACs budget must be a positive number, got {macs!r}; e.g. 2e9")
    lo = math.ceil(rule.phi.min / BUDGET_PHI_STEP - 1e-9)
    hi = math.floor(rule.phi.max / BUDGET_PHI_STEP + 1e-9)
    grid = lambda k: round(k * BUDGET_PHI_STEP, PHI_DECIMALS) + 0.0  # exact names, no -0.0
    cost = lambda k: _macs_at(grid(k), rule, resolution_scale, keypoints)  # the schema sets the head
    cheapest, dearest = cost(lo), cost(hi)
    if not cheapest <= macs <= dearest:
        raise ValueError(
            f"a budget of {macs:.4g} MACs lies outside rule {rule.name!r} at resolution_scale "
            f"{resolution_scale:g}: its cheapest model (phi={grid(lo):g}) costs {cheapest:.4g} MACs and its "
            f"dearest (phi={grid(hi):g}) {dearest:.4g}; pick a budget between them"
        )
    while lo < hi:  # invariant: grid(lo) fits the budget; find the last grid point that does
        mid = (lo + hi + 1) // 2
        if cost(mid) <= macs:
            lo = mid
        else:
            hi = mid - 1
    return grid(lo)
