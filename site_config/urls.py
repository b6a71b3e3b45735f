from django.contrib import admin
from django.urls import include, path

from rooms import catalog, profile_views, stats, views

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
    path("accounts/profile/", profile_views.profile, name="profile"),
]
