from apps.characters.models import Character
from apps.novels.api import entity_views

CharacterListCreateView, CharacterDetailView = entity_views(Character)
