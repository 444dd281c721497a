from django.urls import path

from tests.django_site import views

urlpatterns = [
    path("signup/", views.signup),
    path("pages/<str:page_type>/time/", views.page_time),
    path("comments/", views.comment),
    path("me/", views.me),
    path("article/<str:page_type>/", views.article),
]
