"""Cost-matched design points: proxy input sizes and the phi of each rule that fits a MACs budget."""

from __future__ import annotations

import math

import pytest

from efficienthrnet.complexity import profile
from efficienthrnet.scaling import generate_config, get_rule, list_rules, phi_for_budget, proxy_input_size


def _macs(phi: float, rule: str, scale: float = 1.0) -> int:
    cfg = generate_config(phi, rule)
    return profile(cfg, proxy_input_size(cfg.input_size, scale)).macs


def test_proxy_input_size_rounds_to_the_stride_and_keeps_a_floor():
    assert proxy_input_size(512, 0.25) == 128
    assert proxy_input_size(384, 0.25) == 96
    assert proxy_input_size(416, 0.3) == 128  # 124.8 -> nearest multiple of 32
    assert proxy_input_size(256, 0.1) == 64  # never below 64
    assert proxy_input_size(512, 1.0) == 512
    with pytest.raises(ValueError, match="resolution_scale must be a positive real number, got 0"):
        proxy_input_size(512, 0)


@pytest.mark.parametrize("rule", list_rules())
@pytest.mark.parametrize("scale", [1.0, 0.25])
def test_phi_for_budget_is_exact_against_profile(rule, scale):
    lo, hi = get_rule(rule).phi.min, get_rule(rule).phi.max
    cheapest, dearest = _macs(lo, rule, scale), _macs(hi, rule, scale)
    phis = []
    for fraction in (0.1, 0.4, 0.8):
        budget = cheapest * (dearest / cheapest) ** fraction
        phi = phi_for_budget(budget, rule, resolution_scale=scale)
        assert lo <= phi <= hi and phi == round(phi, 2)
        assert _macs(phi, rule, scale) <= budget  # it fits ...
        if phi < hi:  # ... and the next phi on the grid does not
            assert _macs(round(phi + 0.01, 2), rule, scale) > budget
        phis.append(phi)
    assert phis == sorted(phis)  # a larger budget never gives a smaller phi


def test_phi_for_budget_at_the_cheapest_cost_gives_the_largest_phi_of_that_cost():
    cheapest = _macs(-6.0, "efficienthrnet")
    phi = phi_for_budget(cheapest, "efficienthrnet")
    # Rounding makes cost a step function of phi: the largest phi still at the cheapest cost.
    assert _macs(phi, "efficienthrnet") == cheapest < _macs(round(phi + 0.01, 2), "efficienthrnet")


def test_budget_outside_the_rule_names_its_cost_range():
    with pytest.raises(ValueError, match=r"rule 'width_only'.*cheapest model \(phi=-6\) costs 2\.58\de\+09"):
        phi_for_budget(1e9, "width_only")
    with pytest.raises(ValueError, match="dearest"):
        phi_for_budget(1e15, "efficienthrnet")
    with pytest.raises(ValueError, match="positive number, got nan"):
        phi_for_budget(math.nan)
