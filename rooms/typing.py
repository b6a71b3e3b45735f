"""Who is typing in each room of this process, each typist gone after a timeout.

Typing events cross processes through the channel layer; every process keeps its own
list per room, on the injected clock, and tells its sockets when the list changes.
"""

from __future__ import annotations

from collections.abc import Callable

from rooms.clock import Clock, Timer

# Typists listed per room; past this, more are not listed (the line would not fit anyway).
MAX_TYPISTS_PER_ROOM = 50


class Typing:
    """Typists per room group: user id -> (username, the timer that clears them)."""

    def __init__(self, clock: Clock, timeout: Callable[[], float], changed: Callable[[str], None]):
        self.clock = clock
        self.timeout = timeout
        self.changed = changed  # called with the group when a timer clears a typist
        self.rooms: dict[str, dict[int, tuple[str, Timer]]] = {}

    def update(self, group: str, user_id: int, name: str, typing: bool) -> bool:
        """Someone started (or stopped) typing; return whether the list changed."""
        typists = self.rooms.setdefault(group, {})
        previous = typists.pop(user_id, None)
        if previous is not None:
            previous[1].cancel()
        if typing and len(typists) < MAX_TYPISTS_PER_ROOM:
            timer = self.clock.call_later(self.timeout(), self._expire, group, user_id)
            typists[user_id] = (name, timer)
        if not typists:
            del self.rooms[group]
        return previous is None and typing or previous is not None and not typing

    def stop(self, group: str, user_id: int) -> bool:
        """The user posted (or went quiet): take them off the list; whether it changed."""
        typists = self.rooms.get(group)
        if typists is None or user_id not in typists:
            return False
        typists.pop(user_id)[1].cancel()
        if not typists:
            del self.rooms[group]
        return True

    def typists(self, group: str) -> list[tuple[int, str]]:
        """(user id, username) of everyone typing in the room now."""
        return [(uid, name) for uid, (name, _) in self.rooms.get(group, {}).items()]

    def forget(self, group: str) -> None:
        """The room has no local sockets any more."""
        for _, timer in self.rooms.pop(group, {}).values():
            timer.cancel()

    def _expire(self, group: str, user_id: int) -> None:
        if self.stop(group, user_id):
            self.changed(group)
