"""The hub's user model as the culler reads it: which keys a token may not see."""

from __future__ import annotations

import pytest

from trio_culler._models import SCOPED_USER_KEYS, ModelError, structure_user
from trio_culler._scopes import FIELDS


def test_every_key_the_models_note_as_hidden_has_its_scope_and_no_other() -> None:
    # The models note a missing key as hidden; the scope table says which scope shows it. A key in one list and
    # not the other is either never checked, or a scope that is never asked for.
    assert {field.key for field in FIELDS} == SCOPED_USER_KEYS


def test_a_model_without_a_scoped_key_has_it_hidden() -> None:
    everything: dict[str, object] = {"name": "a", "servers": {}, "last_activity": None, "created": None, "admin": False}
    assert structure_user(everything).hidden == frozenset()
    for key in SCOPED_USER_KEYS:
        model = {k: v for k, v in everything.items() if k != key}
        assert structure_user(model).hidden == {key}, key


def test_a_name_that_is_not_valid_unicode_is_named_in_the_error() -> None:
    fine = {"name": "a", "servers": {"": {"name": ""}}, "last_activity": None, "created": None, "admin": False}
    assert structure_user(fine).name == "a"
    with pytest.raises(ModelError, match=r"^user\.name: not valid Unicode"):
        structure_user({**fine, "name": "bad\ud800"})
    with pytest.raises(ModelError, match=r"^user\.servers\['gpu\\ud800'\]: not valid Unicode"):
        structure_user({**fine, "servers": {"gpu\ud800": {"name": "gpu\ud800"}}})
