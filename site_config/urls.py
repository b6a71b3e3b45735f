from django.contrib import admin
from django.urls import include, path

from rooms import views

urlpatterns = [
    path("", views.room_list, name="room_list"),
    path("rooms/new/", views.room_create, name="room_create"),
    path("rooms/<slug:slug>/", views.room_detail, name="room_detail"),
    path("rooms/<slug:slug>/members/", views.room_member_add, name="room_member_add"),
    path(
        "rooms/<slug:slug>/members/<int:user_id>/remove/",
        views.room_member_remove,
        name="room_member_remove",
    ),
    path("accounts/signup/", views.signup, name="signup"),
    path("accounts/", include("django.contrib.auth.urls")),
    path("admin/", admin.site.urls),
]
