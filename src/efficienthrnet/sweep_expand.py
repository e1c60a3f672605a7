"""A sweep's trials: the `Trial` record and how a `SweepSpec` expands into trials.

`expand_trials(spec)` lists every (phi or budget, rule, seed, training budget) as a `Trial` with a
stable id such as ``pose-reference-phi-2.5-seed0``; `trial_settings` is everything that
determines a trial's result (a finished trial is reused only when its settings match).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import tasks
from .sweep_spec import SweepSpec


@dataclass(frozen=True)
class Trial:
    """One point of a sweep: a task run for one phi under one rule with one seed.

    ``budget_macs`` is set when the sweep asked for a MACs budget (``phi`` is then the rule's
    `phi_for_budget`); ``steps`` when the sweep compares several training budgets.
    """

    task: str
    rule: str
    phi: float
    seed: int
    budget_macs: float | None = None
    steps: int | None = None
    keypoints: str = "coco17"  # the schema of the whole sweep, so not part of the trial id

    @property
    def rule_name(self) -> str:
        """The rule's name (a rule given as a path to a .toml file is named by its file stem)."""
        return Path(self.rule).stem if self.rule.endswith(".toml") else self.rule

    @property
    def trial_id(self) -> str:
        """Stable folder name, e.g. ``pose-reference-phi-2.5-seed0`` or ``pose-width_only-budget2e+08-phi-3.1-seed1``."""
        budget = "" if self.budget_macs is None else f"budget{self.budget_macs:.4g}-"
        steps = "" if self.steps is None else f"-steps{self.steps}"
        return f"{self.task}-{self.rule_name}-{budget}phi{self.phi:g}-seed{self.seed}{steps}"

    def model_config(self):
        """The trial's architecture at the rule's own input size."""
        from .scaling import generate_config

        return generate_config(self.phi, self.rule, keypoints=self.keypoints)


def design_points(spec: SweepSpec) -> list[tuple[str, float, float | None]]:
    """(rule, phi, budget or None) of every design, in the order phi (or budget), then rule.

    With ``budgets_macs`` each rule gets its own phi per budget: the largest whose MACs, at the
    size the trials run at (the rule's own size times ``[train] resolution_scale``, if set),
    fit the budget. Raises ValueError when a phi or budget lies outside a rule's range.
    """
    from .scaling import get_rule, phi_for_budget

    if spec.budgets_macs:
        scale = spec.resolution_scale or 1.0
        keypoints = spec.data.keypoints if spec.data else "coco17"
        return [(rule, phi_for_budget(budget, rule, scale, keypoints), budget)
                for budget in spec.budgets_macs for rule in spec.rules]
    for rule in spec.rules:
        loaded = get_rule(rule)
        for phi in spec.phi:
            loaded.check_phi(phi)
    return [(rule, phi, None) for phi in spec.phi for rule in spec.rules]


def expand_trials(spec: SweepSpec) -> list[Trial]:
    """Every (design, seed, training budget) of the spec: phi or budget, then rule, seed, steps.

    Raises ValueError when a phi lies outside a rule's valid range, a budget outside a rule's
    costs, or two trials would share an id.
    """
    keypoints = spec.data.keypoints if spec.data else "coco17"
    trials = []
    for rule, phi, budget in design_points(spec):
        for seed in spec.seeds:
            for steps in spec.step_budgets:
                trials.append(Trial(spec.task, rule, phi, seed, budget_macs=budget, steps=steps, keypoints=keypoints))
    ids = [t.trial_id for t in trials]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise ValueError(f"sweep {spec.name!r} ({spec.source}) gives duplicate trial ids {duplicates}; "
                         f"list each phi, rule and seed once")
    return trials


_OPTIONAL_TRIAL_FIELDS = ("budget_macs", "steps")


def trial_settings(trial: Trial, spec: SweepSpec) -> dict[str, Any]:
    """Everything that determines a trial's result; a finished trial is reused only if it matches."""
    # Budget, steps and a non-default schema only when set, so folders of older sweeps still resume.
    trial_fields = {k: v for k, v in dataclasses.asdict(trial).items() if v is not None or k not in _OPTIONAL_TRIAL_FIELDS}
    settings = {"trial": _without_default_keypoints(trial_fields), "options": dict(spec.options)}
    if _trains(spec.task):
        settings.update(data=_without_default_keypoints(dataclasses.asdict(spec.data)) if spec.data else None,
                        train=dict(spec.train), evaluate=dataclasses.asdict(spec.evaluate))
    latency = dataclasses.asdict(spec.latency)
    latency["phi"] = latency["rules"] = None  # which trials are timed is settled by `enabled`
    latency["enabled"] = spec.latency.wants(trial.phi, trial.rule)
    settings["latency"] = latency
    return json.loads(json.dumps(settings))


def _without_default_keypoints(table: dict[str, Any]) -> dict[str, Any]:
    """COCO-17 is left out, so that sweep folders written before schemas were a choice still resume."""
    return {k: v for k, v in table.items() if not (k == "keypoints" and v == "coco17")}


def _trains(name: str) -> bool:
    """Whether the task's results depend on [data], [train] and [evaluate] (unknown tasks: assume so)."""
    task = tasks.TASKS.get(name)
    return task is None or task.trains
