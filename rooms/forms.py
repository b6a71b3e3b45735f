"""Forms: every write, from HTTP or the socket, is validated by one of these."""

from django import forms
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.forms import UserCreationForm

from rooms.models import Room
from rooms.usernames import lookalike_of

LOOKALIKE = "That username looks too much like {existing!r}, which is taken: choose another."
UNENCODABLE = "That message holds characters that are not valid text (a lone surrogate)."


def encodable_text(value: str) -> None:
    """Refuse text that UTF-8 cannot hold (lone surrogates, which JSON can carry): the
    database would refuse it with an error nobody could read."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise forms.ValidationError(UNENCODABLE, code="unencodable") from None


class MessageForm(forms.Form):
    """A chat message, as the room page's form sends it."""

    message = forms.CharField(
        max_length=settings.ROOMCAST_MESSAGE_MAX_LENGTH,
        validators=[encodable_text],
        error_messages={
            "required": "Write a message before sending.",
            "max_length": "Messages can be at most %(limit_value)d characters "
            "(this one has %(show_value)d).",
        },
    )
    # The composer's idempotency key (a uuid4 hex): one composed message is stored once.
    client_key = forms.CharField(
        required=False,
        max_length=64,
        validators=[encodable_text],
        error_messages={"max_length": "Could not send that message: reload the page."},
    )


class SyncForm(forms.Form):
    """The page's report of the last room event it shows, sent on every (re)connect."""

    last_seq = forms.IntegerField(min_value=0, max_value=2**63 - 1)


class MessageActionForm(forms.Form):
    """Which message an edit, save, cancel or delete is for."""

    message_id = forms.IntegerField(min_value=1, max_value=2**63 - 1)


class RoomForm(forms.ModelForm):
    class Meta:
        model = Room
        fields = ["title", "is_private"]
        labels = {"is_private": "Private (only members you add can see and enter it)"}


class MemberForm(forms.Form):
    """A username the owner of a private room adds as a member."""

    username = forms.CharField(
        max_length=150,
        widget=forms.TextInput(attrs={"placeholder": "Username", "aria-label": "Username"}),
    )

    def clean_username(self):
        username = self.cleaned_data["username"].strip()
        try:
            return get_user_model().objects.get(username=username, is_active=True)
        except get_user_model().DoesNotExist:
            raise forms.ValidationError(f"There is no user called {username}.") from None


def refuse_lookalike(username: str, exclude_pk: int | None = None) -> None:
    """Raise a ValidationError if `username` looks like someone else's (homoglyphs)."""
    existing = lookalike_of(username, exclude_pk)
    if existing is not None:
        raise forms.ValidationError(LOOKALIKE.format(existing=existing), code="lookalike")


class SignupForm(UserCreationForm):
    class Meta(UserCreationForm.Meta):
        fields = ("username",)

    def clean_username(self) -> str:
        username = super().clean_username()
        if username and not self.has_error("username"):  # taken outright: said already
            refuse_lookalike(username)
        return username
