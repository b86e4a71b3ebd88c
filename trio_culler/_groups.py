"""Whether the groups the rules name exist at the hub: read with ``GET /groups`` (scope ``list:groups``), said
at start and at every pass while one is still unknown; a token that may not list groups is said once, and never
stops a pass (the check is advice: the rules work the same without it).

The words are :func:`._rules.group_check_lines`'s, shared with ``--explain``.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from ._errors import HubAuthError, HubError
from ._rules import GROUPS_UNCHECKED, Rule, group_check_lines

if TYPE_CHECKING:
    from ._hub import HubClient

__all__ = ["GroupCheck", "group_notes", "read_group_names"]

log = logging.getLogger("trio_culler")

#: Groups read at most (a page of 200 at a time): a hub with more has its rules checked against the first ones.
MAX_GROUPS = 20_000
_PAGE = 200


async def read_group_names(hub: HubClient) -> frozenset[str] | None:
    """The names of the hub's groups the token may see, or None when it may not list them (403). Raises the
    HubError of any other failure."""
    names: set[str] = set()
    offset = 0
    while len(names) < MAX_GROUPS:
        try:
            body = await hub.list_groups(offset=offset, limit=_PAGE)
        except HubAuthError:
            return None
        items, more = _page(body)
        names.update(item["name"] for item in items if isinstance(item, dict) and isinstance(item.get("name"), str))
        if not more or not items:
            break
        offset += len(items)
    return frozenset(names)


def _page(body: Any) -> tuple[list[Any], bool]:
    """The items of a page of groups, and whether more follow (a hub before 2.0 answers one plain list)."""
    if isinstance(body, list):
        return body, False
    if isinstance(body, dict) and isinstance(body.get("items"), list):
        pagination = body.get("_pagination")
        following = pagination.get("next") if isinstance(pagination, dict) else None
        return body["items"], bool(following)
    return [], False


async def group_notes(hub: HubClient, rules: tuple[Rule, ...]) -> list[str]:
    """What ``--explain`` says about the group names in ``rules`` (the lines :func:`group_check_lines` gives)."""
    if not any(rule.groups for rule in rules):
        return []
    try:
        known = await read_group_names(hub)
    except HubError as error:
        return [f"the hub's groups could not be read ({error}): the group names in the rules are not checked"]
    return group_check_lines(rules, known)


class GroupCheck:
    """The check, with what it has said already: that the groups cannot be listed is said once per culler."""

    def __init__(self, rules: tuple[Rule, ...]) -> None:
        self.rules = rules
        self.wanted = any(rule.groups for rule in rules)
        self._said_unchecked = False

    async def run(self, hub: HubClient) -> None:
        if not self.wanted:
            return
        try:
            known = await read_group_names(hub)
        except HubError as error:
            # The pass reports the hub's trouble; the group names wait for the next pass.
            log.debug("Could not read the hub's groups: %s", error)
            return
        for line in group_check_lines(self.rules, known):
            if line == GROUPS_UNCHECKED:
                if not self._said_unchecked:
                    log.warning("Rules: %s", line, extra={"event": "groups_unchecked"})
                self._said_unchecked = True
            else:
                log.warning("Rules: %s", line, extra={"event": "unknown_groups"})
