"""Forms: every write, from HTTP or the socket, is validated by one of these."""

from django import forms
from django.conf import settings
from django.contrib.auth.forms import UserCreationForm

from rooms.models import Room


class MessageForm(forms.Form):
    """A chat message, as the room page's form sends it."""

    message = forms.CharField(
        max_length=settings.ROOMCAST_MESSAGE_MAX_LENGTH,
        error_messages={
            "required": "Write a message before sending.",
            "max_length": "Messages can be at most %(limit_value)d characters "
            "(this one has %(show_value)d).",
        },
    )


class SyncForm(forms.Form):
    """The page's report of the last room event it shows, sent on every (re)connect."""

    last_seq = forms.IntegerField(min_value=0, max_value=2**63 - 1)


class RoomForm(forms.ModelForm):
    class Meta:
        model = Room
        fields = ["title"]


class SignupForm(UserCreationForm):
    class Meta(UserCreationForm.Meta):
        fields = ["username"]
