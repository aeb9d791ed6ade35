"""/plugins: what is installed, for admins."""

from __future__ import annotations

from pydantic import BaseModel, Field

from dust.api.deps import Router, SessionDep, allow
from dust.core.security import Permission
from dust.plugins import registry

router = Router(prefix="/plugins", tags=["plugins"])


class PluginOut(BaseModel):
    name: str = Field(description="The plugin's distribution name; `dust` for DUST's own built-ins.")
    version: str | None
    builtin: bool
    detectors: list[str] = Field(description="Anomaly detectors it adds, by name.")
    analyses: list[str] = Field(description="Series analyses it adds to GET /tensors/{id}/analysis.")
    trigger_actions: list[str] = Field(description="Actions trigger rules may name in `then`.")
    importers: list[str] = Field(description="Importers it adds (`dust import <name>`).")
    domain_packs: list[str] = Field(description="Domain packs it adds (`dust demo <name>`).")
    commands: list[str] = Field(description="Commands it adds to `dust`.")


class PluginList(BaseModel):
    items: list[PluginOut]


@router.get("", response_model=PluginList, **allow(Permission.admin))
def list_(session: SessionDep) -> PluginList:
    """Every installed plugin, DUST's own first, and what each adds."""
    return PluginList(items=[PluginOut.model_validate(plugin, from_attributes=True) for plugin in registry.plugins()])
