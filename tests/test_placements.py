"""Placements: one object per scenario name, each with its set-up checks."""

import typing

from mixsim.placements import PLACEMENTS
from mixsim.scenario import OptimizerSection


def test_every_placement_the_schema_allows_has_one_class():
    allowed = typing.get_args(OptimizerSection.model_fields["placement"].annotation)
    assert sorted(PLACEMENTS) == sorted(allowed)
    assert all(cls.name == name for name, cls in PLACEMENTS.items())


def test_only_the_placements_that_update_worker_models_themselves_send_no_model_down():
    free = {name for name, cls in PLACEMENTS.items() if not cls.copy_carries_model}
    assert free == {"cd-adam", "two-way", "onebit-adam"}
    assert {name for name, cls in PLACEMENTS.items() if cls.needs_sync} == free
    assert [name for name, cls in PLACEMENTS.items() if not cls.needs_server] == ["worker"]
