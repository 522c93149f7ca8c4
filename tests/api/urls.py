"""The project's URLs plus a few views that exist only to exercise the error envelope."""

from django.urls import include, path
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.accounts.permissions import CanGenerateWriting


class Boom(APIView):
    def get(self, request):
        raise RuntimeError("secret internal detail")


def plain_boom(request):
    raise RuntimeError("secret internal detail")


class Guarded(APIView):
    permission_classes = (CanGenerateWriting,)

    def get(self, request):
        return Response({"ok": True})


class Echo(APIView):
    class InputSerializer(serializers.Serializer):
        promptId = serializers.IntegerField()
        temperature = serializers.FloatField(min_value=0, max_value=2, default=0.7)
        history = serializers.ListField(child=serializers.DictField(), required=False)

    def post(self, request):
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        return Response(data.validated_data)


urlpatterns = [
    path("api/v1/test/boom", Boom.as_view()),
    path("api/v1/test/plain-boom", plain_boom),
    path("api/v1/test/guarded", Guarded.as_view()),
    path("api/v1/test/echo", Echo.as_view()),
    path("", include("writing_service.urls")),
]
