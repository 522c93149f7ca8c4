from django.urls import path

from apps.generation import api
from apps.generation.jobs import api as jobs

urlpatterns = [
    path("generation/writing", api.WritingGenerateView.as_view(), name="generation-writing"),
    path("generation/writing/preview", api.WritingPreviewView.as_view(), name="generation-writing-preview"),
    path("generation/writing/stream", api.WritingStreamView.as_view(), name="generation-writing-stream"),
    path("generation/jobs", jobs.JobCreateView.as_view(), name="generation-jobs"),
    path("generation/jobs/<str:job_id>", jobs.JobDetailView.as_view(), name="generation-job"),
    path("generation/jobs/<str:job_id>/events", jobs.JobEventsView.as_view(), name="generation-job-events"),
    path("generation/jobs/<str:job_id>/cancel", jobs.JobCancelView.as_view(), name="generation-job-cancel"),
    path("generations", api.GenerationListView.as_view(), name="generations"),
    path("generations/<str:generation_id>", api.GenerationDetailView.as_view(), name="generation-detail"),
]
