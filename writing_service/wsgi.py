import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "writing_service.settings")

application = get_wsgi_application()

from writing_service.security import require_production_secrets  # noqa: E402

require_production_secrets()
