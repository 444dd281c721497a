"""Views of a tiny site that use the SmartStream helpers as a Django site would."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET, require_POST

from producers.django import readers
from producers.django.events import send_comment, send_new_user, send_page_time


@require_POST
@login_required
def signup(request: HttpRequest) -> JsonResponse:
    """The site's sign-up step: the new user's demographics go to `new-users`."""
    sent = send_new_user(
        request.user.pk,
        age=int(request.POST["age"]),
        sex=request.POST["sex"],
        avg1=float(request.POST["avg1"]),
    )
    return JsonResponse({"sent": sent})


@require_POST
@login_required
def page_time(request: HttpRequest, page_type: str) -> JsonResponse:
    """A page view the server measured (e.g. between two requests of a reading flow)."""
    seconds = float(request.POST["seconds"])
    return JsonResponse({"sent": send_page_time(request.user.pk, page_type, seconds)})


@require_POST
@login_required
def comment(request: HttpRequest) -> JsonResponse:
    """A comment saved by the site (its primary key is the comment id) and sent to moderation."""
    comment_id = request.POST["comment_id"]
    sent = send_comment(comment_id, request.POST["text"], user_id=request.user.pk)
    return JsonResponse({"comment_id": comment_id, "sent": sent})


@require_GET
@login_required
def me(request: HttpRequest) -> JsonResponse:
    """The visitor's cluster and atypical flag and one comment's label: one Redis round trip."""
    snapshot = readers.read(user_id=request.user.pk, comment_id=request.GET.get("comment"))
    return JsonResponse(
        {
            "ok": snapshot.ok,
            "cluster": snapshot.cluster,
            "atypical": snapshot.atypical,
            "is_spam": snapshot.is_spam,
            "comment": snapshot.comment,
        }
    )


@require_GET
def article(request: HttpRequest, page_type: str) -> HttpResponse:
    """A page with the beacon; ?visitor= stands for a site that names the reader itself."""
    context = {"page_type": page_type, "visitor": request.GET.get("visitor")}
    return render(request, "article.html", context)
