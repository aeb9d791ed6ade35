"""Repository functions: every query the engine runs, one module per resource."""

from typing import Any

from sqlalchemy import CompoundSelect, Select

StoredBlock = tuple[str, bytes, bytes]  # shape, data, stamps
Visible = Select[Any] | CompoundSelect[Any]  # a query of the entity ids a principal may see (engine.access)
