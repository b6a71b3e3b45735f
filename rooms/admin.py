from django.contrib import admin

from rooms.models import Message, Room


@admin.register(Room)
class RoomAdmin(admin.ModelAdmin):
    list_display = ["title", "slug", "owner", "last_seq", "created"]
    prepopulated_fields = {"slug": ["title"]}
    readonly_fields = ["last_seq"]
    search_fields = ["title", "slug"]


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    list_display = ["room", "seq", "author", "body", "created"]
    list_filter = ["room"]
    readonly_fields = ["room", "seq"]
    search_fields = ["body"]
