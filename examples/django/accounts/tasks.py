"""The background work of the accounts app."""

from django.contrib.auth import get_user_model
from django.core.mail import send_mail

from celeriac import shared_task


@shared_task(autoretry_for=(ConnectionError,), retry_backoff=True, max_retries=5)
def send_welcome_email(user_id):
    """Mail a new user; run by a worker, so the registration page answers at once."""
    user = get_user_model().objects.get(pk=user_id)
    send_mail(
        subject="Welcome!",
        message=f"Hello {user.username}, thanks for signing up.",
        from_email=None,
        recipient_list=[user.email],
    )
    return user.email
