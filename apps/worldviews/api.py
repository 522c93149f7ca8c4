from apps.novels.api import entity_views
from apps.worldviews.models import Worldview

WorldviewListCreateView, WorldviewDetailView = entity_views(Worldview)
