"""/domains: the analyses of domain packs (supply chain: bottlenecks and what-if)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Query

from dust.api.deps import Router, SessionDep, allow
from dust.core.security import Permission
from dust.engine import supply_chain
from dust.engine.supply_chain import Bottlenecks, WhatIf, WhatIfResult

router = Router(prefix="/domains", tags=["domains"])
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "A site to remove does not exist, or not yours."}}


@router.get("/supply-chain/bottlenecks", response_model=Bottlenecks, **allow(Permission.read))
def bottlenecks(
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=100, description="How many sites to rank.")] = 10,
    horizon_days: Annotated[float, Query(gt=0, le=365, description="Stocks that run out within this many days.")] = 14,
    window: Annotated[int, Query(ge=5, le=365, description="Days of inventory the stock trend is fitted on.")] = 14,
) -> Bottlenecks:
    """Where flow concentrates (betweenness, max-flow/min-cut) and which stocks run out, in the graph you see."""
    return supply_chain.bottlenecks(session, limit=limit, horizon_days=horizon_days, window=window)


@router.post("/supply-chain/what-if", response_model=WhatIfResult, responses=NOT_FOUND, **allow(Permission.read))
def what_if(data: WhatIf, session: SessionDep) -> WhatIfResult:
    """Take sites away (nothing is changed): the retailers that starve of a product, and the flow before and after."""
    return supply_chain.what_if(session, data)
