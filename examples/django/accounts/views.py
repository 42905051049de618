"""A registration page: the user is saved, the welcome mail goes out in the background."""

from django.contrib.auth import get_user_model
from django.db import transaction
from django.forms import CharField, EmailField, Form, PasswordInput
from django.http import HttpResponse
from django.shortcuts import render

from .tasks import send_welcome_email


class RegistrationForm(Form):
    username = CharField(max_length=150)
    email = EmailField()
    password = CharField(widget=PasswordInput)


def register(request):
    if request.method == "POST":
        form = RegistrationForm(request.POST)
        if form.is_valid():
            with transaction.atomic():
                user = get_user_model().objects.create_user(**form.cleaned_data)
                # Sent when the transaction commits: the worker is sure to find the user.
                send_welcome_email.delay_on_commit(user.pk)
            return HttpResponse(f"Welcome {user.username}! Check your mailbox.", status=201)
    else:
        form = RegistrationForm()
    return render(request, "accounts/register.html", {"form": form})
