"""Process statistics for soak tests: memory, sockets, groups, presence entries.

Served at /dev/stats/ only when ROOMCAST_STATS is on (bench/soak.py turns it on).
"""

from django.conf import settings
from django.http import Http404, JsonResponse

from rooms import presence
from rooms.fanout import hub


def rss_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


async def process_stats(request):
    if not settings.ROOMCAST_STATS:
        raise Http404("Statistics are off.")
    layer_groups = getattr(hub.layer, "groups", {}) if hub.layer is not None else {}
    sockets = {s for members in hub.groups.values() for s in members}
    tracked = hub.tracker.entries if hub.tracker is not None else {}
    return JsonResponse(
        {
            "rss_kib": rss_kib(),
            "hub_groups": len(hub.groups),
            "sockets": len(sockets),
            "outbox_entries": sum(len(getattr(s, "outbox", ())) for s in sockets),
            "catch_ups_in_flight": len(hub.catch_ups.shared.in_flight),
            "layer_group_members": sum(len(m) for m in layer_groups.values()),
            "presence_entries": sum(len(e) for e in tracked.values()),
            "stored_presence_entries": sum(len(m) for m in presence._sets.values()),
            "user_socket_entries": sum(len(c) for c in hub.socket_keys.values()),
        }
    )
