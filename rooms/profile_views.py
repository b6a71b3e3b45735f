"""The profile page: a signed-in user's own settings (time zone, email digest)."""

from __future__ import annotations

import zoneinfo

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render

from rooms.models import Profile


def time_zone_choices() -> list[tuple[str, str]]:
    """Every IANA time zone this machine knows, as (name, label), sorted by name."""
    names = sorted(zoneinfo.available_timezones() - {"localtime", "Factory"})
    return [(name, name.replace("_", " ")) for name in names]


class ProfileForm(forms.ModelForm):
    """The settings a user may change on their profile page."""

    time_zone = forms.ChoiceField(
        label="Time zone",
        choices=time_zone_choices,
        help_text="Times and dates on your pages are shown in this time zone.",
    )

    class Meta:
        model = Profile
        fields = ["time_zone", "email_digest"]
        labels = {"email_digest": "Email me a digest of mentions I missed"}


@login_required
def profile(request: HttpRequest) -> HttpResponse:
    """Show and change the signed-in user's settings."""
    instance = Profile.for_user(request.user)
    form = ProfileForm(request.POST or None, instance=instance)
    if request.method == "POST" and form.is_valid():
        form.save()
        messages.success(request, "Your settings are saved.")
        return redirect("profile")
    status = 400 if request.method == "POST" else 200
    return render(request, "accounts/profile.html", {"form": form}, status=status)
