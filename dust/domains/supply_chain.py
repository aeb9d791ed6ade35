"""Supply chain: products, suppliers, factories, warehouses and retailers; daily inventory and flow.

The network is layered: suppliers ``supplies`` factories (the products they send in the relation's attributes),
factories ``ships_to`` warehouses, warehouses ``ships_to`` retailers. Every relation carries
``lead_time_days`` and ``capacity`` (units a day) in its attributes and the flow it usually carries as its weight.

The generator plants what the analyses should find (``plan`` says where, for tests and the demo tour):

- a hub: warehouse-1 serves 7 in 10 retailers, but its inbound capacity covers only 60 % of their demand, so
  most flow passes through it and its inbound edges are in the minimum cut;
- a sole source: supplier-1 is the only supplier of SKU-001, made only at factory-1, which ships only to
  warehouse-2: without supplier-1 warehouse-2's retailers starve of SKU-001;
- inventory anomalies: a few retailers whose stock of one product runs down to near zero over the last month
  (stock-out risk), and one day of shrinkage at the hub (a one-day drop, no trend).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
from sqlalchemy.orm import Session

from dust.domains import DomainPack, load_rules
from dust.engine import entities, kinds, relations, schemas, tensors
from dust.engine.entities import EntityCreate
from dust.engine.kinds import KindPolicy
from dust.engine.relations import RelationCreate
from dust.engine.schemas import SchemaCreate
from dust.engine.tensors import TensorCreate

PRODUCTS = [f"SKU-{i + 1:03d}" for i in range(12)]  # a fixed catalogue: the schemas' labels do not depend on size
_PRODUCT_NAMES = [
    "Espresso beans 1 kg",
    "Oat milk 1 l",
    "Paper cups (50)",
    "Dark chocolate 100 g",
    "Green tea (20 bags)",
    "Cane sugar 1 kg",
    "Almond biscuits",
    "Sparkling water 6x1 l",
    "Orange juice 1 l",
    "Rice crackers",
    "Honey 500 g",
    "Ground coffee 500 g",
]
INVENTORY = SchemaCreate.model_validate(
    {
        "name": "inventory",
        "description": "Units on hand at a site at the end of each day, per product.",
        "axes": [
            {"name": "product", "labels": PRODUCTS},
            {"name": "measure", "labels": ["on_hand"], "units": {"on_hand": "units"}},
        ],
        "time": {"unit": "day", "step": 1},
    }
)
FLOW = SchemaCreate.model_validate(
    {
        "name": "flow",
        "description": "Units a site received (in) and shipped (out) each day, per product.",
        "axes": [
            {"name": "product", "labels": PRODUCTS},
            {"name": "direction", "labels": ["in", "out"], "units": {"in": "units", "out": "units"}},
        ],
        "time": {"unit": "day", "step": 1},
    }
)
POLICIES = {
    "product": KindPolicy(description="A stock-keeping unit; its external id is the SKU.", public=["name"]),
    "supplier": KindPolicy(description="Sends materials for products to factories.", public=["name"]),
    "factory": KindPolicy(description="Makes products and ships them to warehouses.", public=["name"]),
    "warehouse": KindPolicy(description="Stocks products and ships them to retailers.", public=["name"]),
    "retailer": KindPolicy(description="Sells products; stocked by one warehouse.", public=["name"]),
}
MARKER = ("warehouse", "warehouse-1")
LOW_STOCK = 20  # units: the rules' alert threshold; normal stock never goes below it, planted run-downs do
HUB_SHARE = 0.6  # the hub's inbound capacity over its retailers' demand: the planted constriction


@dataclass(frozen=True)
class Plan:
    """Where the generator puts things: site counts and the planted structure (indices are 0-based)."""

    suppliers: int
    factories: int
    warehouses: int
    retailers: int
    days: int

    @classmethod
    def of(cls, size: int, days: int = 90) -> Plan:
        """``size`` sites, at least 32: 10 % suppliers, 4 % factories, 3 % warehouses, the rest retailers."""
        suppliers, factories, warehouses = max(12, size // 10), max(3, size // 25), max(3, size * 3 // 100)
        return cls(suppliers, factories, warehouses, max(14, size - suppliers - factories - warehouses), days)

    def supplier_products(self, s: int) -> list[int]:
        """Supplier 0 is the sole source of product 0; the others send two products each of 1..11, so each of
        those has at least two suppliers."""
        return [0] if s == 0 else sorted({1 + (2 * (s - 1)) % 11, 1 + (2 * (s - 1) + 1) % 11})

    def makes(self, f: int) -> list[int]:
        """Factory 0 makes only product 0; factories 1.. share the others, each product made at one factory or
        more (with more than 11 of them, each makes one product)."""
        if f == 0:
            return [0]
        m = min(self.factories - 1, len(PRODUCTS) - 1)
        return [p for p in range(1, len(PRODUCTS)) if (p - 1) % m == (f - 1) % m]

    def factory_for(self, s: int, product: int) -> int:
        """The factory supplier ``s`` sends ``product`` to: one of those that make it, by turns."""
        making = [f for f in range(self.factories) if product in self.makes(f)]
        return making[s % len(making)]

    def factory_warehouses(self, f: int) -> list[int]:
        """Factory 0 ships only to warehouse 1 (a region); the others to the hub (0) and up to three regions."""
        if f == 0:
            return [1]
        regions = self.warehouses - 1
        return [0, *sorted({1 + (3 * f + j) % regions for j in range(3)})]

    def warehouse_of(self, r: int) -> int:
        """Seven in ten retailers are the hub's; the rest are spread over the regional warehouses."""
        if r % 10 < 7:
            return 0
        return 1 + (r // 10 * 3 + r % 10 - 7) % (self.warehouses - 1)

    def products_at(self, w: int) -> list[int]:
        """The products a warehouse (and so each of its retailers) can get."""
        return sorted({p for f in range(self.factories) if w in self.factory_warehouses(f) for p in self.makes(f)})

    def declining(self) -> list[tuple[int, int]]:
        """(retailer, product): the planted run-downs to near zero, at hub retailers (which carry 1..11)."""
        return [(10 * i + 3, 1 + i % 11) for i in range(max(2, self.retailers // 100)) if 10 * i + 3 < self.retailers]

    @property
    def shrinkage(self) -> tuple[int, int, int]:
        """(warehouse, product, day): one day of lost stock at the hub."""
        return 0, 1, max(0, self.days - 10)


def generate(
    session: Session, size: int = 50, days: int = 90, seed: int = 7, progress: Callable[[int], None] | None = None
) -> dict[str, int]:
    """``size`` sites (at least 32) with ``days`` of daily inventory and flow; returns what was made."""
    rng = np.random.default_rng(seed)
    plan = Plan.of(size, days)
    for definition in (INVENTORY, FLOW):
        if schemas.repo.latest(session, definition.name) is None:
            schemas.create(session, definition)
    for kind, policy in POLICIES.items():
        kinds.put(session, kind, policy)
    load_rules(session, PACK)  # before the inventory: the planted run-downs raise stock-out alerts
    entities.create_many(
        session,
        [
            EntityCreate(kind="product", name=name, external_id=sku, attributes={"sku": sku})
            for sku, name in zip(PRODUCTS, _PRODUCT_NAMES, strict=True)
        ],
    )
    sites = _sites(session, plan, rng)
    if progress:
        progress(plan.suppliers + plan.factories)
    demand = rng.integers(60, 141, plan.retailers)  # units a day per retailer
    relations.create_many(session, _network(plan, sites, demand, rng))
    values = _tensors(session, plan, sites, demand, rng, progress)
    return {
        "products": len(PRODUCTS),
        "suppliers": plan.suppliers,
        "factories": plan.factories,
        "warehouses": plan.warehouses,
        "retailers": plan.retailers,
        "values": values,
    }


def _sites(session: Session, plan: Plan, rng: np.random.Generator) -> dict[str, list[uuid.UUID]]:
    """Every site entity, by kind, in plan order; external ids are ``<kind>-<n>`` from 1."""
    counts = {
        "supplier": plan.suppliers,
        "factory": plan.factories,
        "warehouse": plan.warehouses,
        "retailer": plan.retailers,
    }
    cities = ["Lyon", "Porto", "Gdansk", "Turin", "Ghent", "Leipzig", "Bilbao", "Aarhus", "Brno", "Cork"]
    made: dict[str, list[uuid.UUID]] = {}
    for kind, count in counts.items():
        items = [
            EntityCreate(
                kind=kind,
                name=f"{kind.title()} {i + 1} {cities[int(rng.integers(len(cities)))]}",
                external_id=f"{kind}-{i + 1}",
                attributes={"hub": True} if kind == "warehouse" and i == 0 else {},
            )
            for i in range(count)
        ]
        made[kind] = [entity.id for entity in entities.create_many(session, items)]
    return made


def _network(
    plan: Plan, sites: dict[str, list[uuid.UUID]], demand: np.ndarray, rng: np.random.Generator
) -> list[RelationCreate]:
    """supplies and ships_to with lead time and capacity; the weight is the usual daily flow."""

    def edge(type_: str, source: uuid.UUID, target: uuid.UUID, capacity: float, lead: int, **more: object) -> None:
        weight = round(capacity * float(rng.uniform(0.5, 0.9)), 1)
        attributes = {"lead_time_days": lead, "capacity": round(capacity, 1), **more}
        made.append(
            RelationCreate(source_id=source, target_id=target, type=type_, weight=weight, attributes=attributes)
        )

    made: list[RelationCreate] = []
    for s in range(plan.suppliers):
        by_factory: dict[int, list[str]] = {}
        for p in plan.supplier_products(s):
            by_factory.setdefault(plan.factory_for(s, p), []).append(PRODUCTS[p])
        for f, skus in by_factory.items():
            lead = int(rng.integers(5, 21))
            edge("supplies", sites["supplier"][s], sites["factory"][f], 2000.0, lead, products=skus)
    hub_demand = float(sum(demand[r] for r in range(plan.retailers) if plan.warehouse_of(r) == 0))
    for f in range(plan.factories):
        for w in plan.factory_warehouses(f):
            capacity = HUB_SHARE * hub_demand / (plan.factories - 1) if w == 0 else 3000.0
            edge("ships_to", sites["factory"][f], sites["warehouse"][w], capacity, int(rng.integers(2, 8)))
    for r in range(plan.retailers):
        w = plan.warehouse_of(r)
        edge("ships_to", sites["warehouse"][w], sites["retailer"][r], float(demand[r]), int(rng.integers(1, 4)))
    return made


def _tensors(
    session: Session,
    plan: Plan,
    sites: dict[str, list[uuid.UUID]],
    demand: np.ndarray,
    rng: np.random.Generator,
    progress: Callable[[int], None] | None,
) -> int:
    """Inventory for warehouses and retailers, flow for factories and warehouses; how many values."""
    origin = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=plan.days)
    carried = {w: plan.products_at(w) for w in range(plan.warehouses)}
    declining = dict(plan.declining())
    arrays: list[tuple[uuid.UUID, str, np.ndarray]] = []
    for w in range(plan.warehouses):
        served = float(sum(demand[r] for r in range(plan.retailers) if plan.warehouse_of(r) == w))
        stock = _stock(rng, plan.days, carried[w], 8 * served / max(1, len(carried[w])))
        if w == plan.shrinkage[0]:
            stock[plan.shrinkage[1], 0, plan.shrinkage[2]] = LOW_STOCK // 2  # back to normal the next day
        arrays.append((sites["warehouse"][w], "inventory", stock))
        arrays.append((sites["warehouse"][w], "flow", _flow(rng, plan.days, carried[w], served)))
    for f in range(plan.factories):
        made = plan.makes(f)
        arrays.append((sites["factory"][f], "flow", _flow(rng, plan.days, made, 400.0 * len(made))))
    for r in range(plan.retailers):
        stock = _stock(rng, plan.days, carried[plan.warehouse_of(r)], 3 * float(demand[r]) / 4)
        if r in declining:
            stock[declining[r], 0] = _run_down(rng, stock[declining[r], 0])
        arrays.append((sites["retailer"][r], "inventory", stock))
    written = 0
    for i in range(0, len(arrays), 500):  # a few statements per 500 tensors: fast, and the bar moves
        chunk = arrays[i : i + 500]
        created = tensors.create_many(
            session, [TensorCreate(entity_id=e, schema_name=name, origin=origin) for e, name, _ in chunk]
        )
        written += sum(
            tensors.write_arrays(session, {t.id: a for t, (_, _, a) in zip(created, chunk, strict=True)}).values()
        )
        if progress:
            progress(sum(1 for _, name, _ in chunk if name == "inventory"))
    return written


def _stock(rng: np.random.Generator, days: int, products: list[int], level: float) -> np.ndarray:
    """(product, measure, day): restocked daily around ``level`` (well above LOW_STOCK); NaN where not carried."""
    values = np.full((len(PRODUCTS), 1, days), np.nan)
    for p in products:
        base = max(4 * LOW_STOCK, level * float(rng.uniform(0.7, 1.3)))
        values[p, 0] = np.maximum(3 * LOW_STOCK, base + rng.normal(0, 0.08 * base, days))
    return np.round(values)


def _run_down(rng: np.random.Generator, series: np.ndarray) -> np.ndarray:
    """The last 30 days fall steadily to a few units: replenishment stopped, sales went on."""
    out = series.copy()
    start = max(0, len(series) - 30)
    steps = len(series) - start
    out[start:] = np.linspace(series[start], float(rng.integers(2, 8)), steps) + rng.normal(0, 1.5, steps)
    return np.round(np.maximum(out, 0))


def _flow(rng: np.random.Generator, days: int, products: list[int], volume: float) -> np.ndarray:
    """(product, direction, day): what came in and went out, about ``volume`` a day over ``products``."""
    values = np.full((len(PRODUCTS), 2, days), np.nan)
    for p in products:
        out = volume / max(1, len(products)) * rng.uniform(0.8, 1.2, days)
        values[p, 0] = out * rng.uniform(0.9, 1.1, days)
        values[p, 1] = out
    return np.round(values)


TOUR = """\
What to look at (sign in at /docs, or use `dust` over REST; ids are in GET /api/v1/entities?kind=warehouse):
  - Bottlenecks: GET /api/v1/domains/supply-chain/bottlenecks. Warehouse 1 (external id warehouse-1, the hub)
    tops betweenness and carries most of the flow; its inbound ships_to edges are in the minimum cut: they
    cover only 60 % of what its retailers sell.
  - What-if: POST /api/v1/domains/supply-chain/what-if {"remove": ["<id of supplier-1>"]}: supplier-1 is the
    only source of SKU-001, so warehouse-2's retailers starve of it; remove any other supplier and no one does.
  - Stock-out risk: the same bottlenecks answer lists the retailers whose stock has been running down for a
    month (retailer-4, retailer-14, ...), with days left at the current trend.
  - Alerts: GET /api/v1/alerts: the pack's rules alerted those retailers and their warehouse when stock fell
    under 20 units, and the hub on the day it lost most of its SKU-002 (shrinkage).
  - Tensors: each retailer's `inventory` (product x measure x day) and each warehouse's and factory's `flow`
    (product x in/out x day); the master tensor: GET /api/v1/query_master/tensor?type=supplies,ships_to.
"""

PACK = DomainPack(
    name="supply-chain",
    description="Suppliers, factories, warehouses and retailers with daily inventory and flow; a planted "
    "bottleneck and a sole-source supplier.",
    generate=generate,
    marker=MARKER,
    unit="sites",
    rules="supply_chain_triggers.json",
    tour=TOUR,
)
