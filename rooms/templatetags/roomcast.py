"""Template filters for Roomcast's fragments."""

from django import template
from django.utils.html import conditional_escape, format_html
from django.utils.safestring import SafeString, mark_safe

from rooms.models import MENTION

register = template.Library()


@register.filter
def mentions(text: str) -> SafeString:
    """Escape `text` and highlight each @username in it."""
    escaped = str(conditional_escape(text))
    # Usernames hold no characters that escaping changes, so matching after escaping is safe.
    return mark_safe(
        MENTION.sub(lambda m: format_html('<mark class="mention">@{}</mark>', m[1]), escaped)
    )
