from django.contrib import admin
from django.urls import include, path

from rooms import catalog, job_views, profile_views, stats, views
from rooms.health import healthz, readyz
from rooms.metrics import metrics_view

urlpatterns = [
    path("", views.room_list, name="room_list"),
    path("rooms/new/", views.room_create, name="room_create"),
    path("rooms/<slug:slug>/", views.room_detail, name="room_detail"),
    path("rooms/<slug:slug>/post/", views.room_post, name="room_post"),
    path("rooms/<slug:slug>/updates/", views.room_updates, name="room_updates"),
    path("rooms/<slug:slug>/members/", views.room_member_add, name="room_member_add"),
    path(
        "rooms/<slug:slug>/members/<int:user_id>/remove/",
        views.room_member_remove,
        name="room_member_remove",
    ),
    path("dashboard/", views.dashboard_page, name="dashboard"),
    path("accounts/signup/", views.signup, name="signup"),
    path("accounts/", include("django.contrib.auth.urls")),
    path("admin/", admin.site.urls),
    path("dev/stats/", stats.process_stats, name="process_stats"),
    path("dev/fragments/", catalog.fragment_catalog, name="fragment_catalog"),
    # access: edit and delete without a socket (and Cancel: the message as it stands)
    path("rooms/<slug:slug>/messages/<int:message_id>/", views.message_show, name="message_show"),
    path(
        "rooms/<slug:slug>/messages/<int:message_id>/edit/", views.message_edit, name="message_edit"
    ),
    path(
        "rooms/<slug:slug>/messages/<int:message_id>/delete/",
        views.message_delete,
        name="message_delete",
    ),
    # ops: probes and metrics
    path("healthz", healthz, name="healthz"),
    path("readyz", readyz, name="readyz"),
    path("metrics", metrics_view, name="metrics"),
    # jobs: exports and notifications
    path("rooms/<slug:slug>/export/", job_views.export_control, name="export_control"),
    path("exports/<uuid:export_id>/", job_views.export_download, name="export_download"),
    path("notifications/", job_views.inbox, name="notifications"),
    path(
        "notifications/unsubscribe/<str:token>/",
        job_views.digest_unsubscribe,
        name="digest_unsubscribe",
    ),
    # page: the profile (time zone, email digests)
    path("accounts/profile/", profile_views.profile, name="profile"),
]
