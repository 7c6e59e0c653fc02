"""Loading models and knowing their architecture."""

from lowbit.models.arch import ArchSpec, InputGroup, arch_for_model_type
from lowbit.models.loader import DEFAULT_MODEL, LoadedModel, load_model

__all__ = ["DEFAULT_MODEL", "ArchSpec", "InputGroup", "LoadedModel", "arch_for_model_type", "load_model"]
