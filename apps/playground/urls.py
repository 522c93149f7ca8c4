from django.urls import path

from apps.playground import views

urlpatterns = [path("", views.playground, name="playground")]
