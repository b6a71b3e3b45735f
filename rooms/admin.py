"""The admin: every change it makes to rooms, members and messages goes through rooms.actions,
so a member removed here is shut out of their open pages exactly as one removed on the page.

The background jobs' records (exports, notifications, digest entries, job leases, worker
heartbeats) are shown read-only: they change only through the code that keeps each page's
bell, progress bar and the workers' bookkeeping true.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin
from django.contrib.auth.forms import AdminUserCreationForm, UserChangeForm
from django.db.models import Model
from django.http import HttpRequest

from rooms import actions
from rooms.digest import DigestEntry
from rooms.exports import Export
from rooms.forms import refuse_lookalike
from rooms.models import Message, Room
from rooms.notifications import Notification
from rooms.workers import JobLease, WorkerHeartbeat


class RoomAdminForm(forms.ModelForm):
    class Meta:
        model = Room
        fields = ["title", "slug", "owner", "is_private", "members"]

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        owner, members = cleaned.get("owner"), cleaned.get("members")
        if owner is not None and members is not None and owner in members:
            self.add_error("members", actions.OWNER_IS_MEMBER)
        if members and not cleaned.get("is_private"):
            self.add_error("members", actions.NOT_PRIVATE)
        return cleaned


@admin.register(Room)
class RoomAdmin(admin.ModelAdmin):
    form = RoomAdminForm
    list_display = ["title", "slug", "owner", "last_seq", "created"]
    prepopulated_fields = {"slug": ["title"]}
    readonly_fields = ["last_seq"]
    search_fields = ["title", "slug"]
    filter_horizontal = ["members"]

    def save_related(self, request, form, formsets, change) -> None:
        # Members change through actions (removal closes the member's sockets), not the form.
        members = form.cleaned_data.pop("members", None)
        super().save_related(request, form, formsets, change)
        if members is not None:
            room = form.instance
            if room.is_private or members:
                actions.set_members(room, actions.SYSTEM, members)


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    list_display = ["room", "seq", "author", "body", "deleted", "created"]
    list_filter = ["room"]
    fields = ["room", "seq", "author", "body", "edited", "deleted"]
    readonly_fields = ["room", "seq", "author", "edited", "deleted"]
    search_fields = ["body"]

    def has_add_permission(self, request) -> bool:
        return False  # messages are posted in rooms (or by `manage.py announce`)

    def save_model(self, request, obj, form, change) -> None:
        if change and "body" in form.changed_data:
            actions.edit_message(obj.room, actions.SYSTEM, obj.pk, obj.body)

    def delete_model(self, request, obj) -> None:
        # A tombstone, live on every page, rather than a row that vanishes unannounced.
        actions.delete_message(obj.room, actions.SYSTEM, obj.pk)

    def delete_queryset(self, request, queryset) -> None:
        for message in queryset.select_related("room"):
            actions.delete_message(message.room, actions.SYSTEM, message.pk)


class LookalikeCreationForm(AdminUserCreationForm):
    def clean_username(self) -> str:
        username = super().clean_username()
        if username and not self.has_error("username"):
            refuse_lookalike(username)
        return username


class LookalikeChangeForm(UserChangeForm):
    def clean_username(self) -> str:
        username = self.cleaned_data["username"]
        refuse_lookalike(username, exclude_pk=self.instance.pk)
        return username


User = get_user_model()
if admin.site.is_registered(User):
    admin.site.unregister(User)


@admin.register(User)
class RoomcastUserAdmin(UserAdmin):
    """Django's user admin, refusing usernames that look like someone else's."""

    add_form = LookalikeCreationForm
    form = LookalikeChangeForm


class ReadOnlyAdmin(admin.ModelAdmin):
    """Shown, never added, changed or deleted here (that would skip the code that owns it)."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False


@admin.register(Export)
class ExportAdmin(ReadOnlyAdmin):
    list_display = ["id", "room", "user", "format", "state", "done", "total", "created"]
    list_filter = ["state", "format"]


@admin.register(Notification)
class NotificationAdmin(ReadOnlyAdmin):
    list_display = ["user", "kind", "text", "created", "read_at"]
    list_filter = ["kind"]
    search_fields = ["text", "user__username"]


@admin.register(DigestEntry)
class DigestEntryAdmin(ReadOnlyAdmin):
    list_display = ["user", "notification", "scheduled_at", "state", "done_at"]
    list_filter = ["state"]


@admin.register(JobLease)
class JobLeaseAdmin(ReadOnlyAdmin):
    list_display = ["task", "worker_id", "expires_at"]


@admin.register(WorkerHeartbeat)
class WorkerHeartbeatAdmin(ReadOnlyAdmin):
    list_display = ["worker_id", "hostname", "pid", "started_at", "seen_at"]
