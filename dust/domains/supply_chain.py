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
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cached_property

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
CHUNK = 500  # sites made per step: memory stays bounded at any size, and progress is told after each step
_CITIES = ["Lyon", "Porto", "Gdansk", "Turin", "Ghent", "Leipzig", "Bilbao", "Aarhus", "Brno", "Cork"]


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

    @property
    def sites(self) -> int:
        return self.suppliers + self.factories + self.warehouses + self.retailers

    def supplier_products(self, s: int) -> list[int]:
        """Supplier 0 is the sole source of product 0; the others send two products each of 1..11, so each of
        those has at least two suppliers."""
        return [0] if s == 0 else sorted({1 + (2 * (s - 1)) % 11, 1 + (2 * (s - 1) + 1) % 11})

    @property
    def _turns(self) -> int:
        """Factories 1.. take products 1..11 by turns: factory f makes p when (p - 1) and (f - 1) agree modulo
        this."""
        return min(self.factories - 1, len(PRODUCTS) - 1)

    def makes(self, f: int) -> list[int]:
        """Factory 0 makes only product 0; factories 1.. share the others, each product made at one factory or
        more (with more than 11 of them, each makes one product)."""
        if f == 0:
            return [0]
        m = self._turns
        return [p for p in range(1, len(PRODUCTS)) if (p - 1) % m == (f - 1) % m]

    def factory_for(self, s: int, product: int) -> int:
        """The factory supplier ``s`` sends ``product`` to: one of those that make it, by turns."""
        if product == 0:
            return 0
        making = range(1 + (product - 1) % self._turns, self.factories, self._turns)  # as ``makes`` assigns them
        return making[s % len(making)]

    def factory_warehouses(self, f: int) -> list[int]:
        """Factory 0 ships only to warehouse 1 (a region); the others to the hub (0) and up to three regions."""
        if f == 0:
            return [1]
        regions = self.warehouses - 1
        return [0, *sorted({1 + (3 * f + j) % regions for j in range(3)})]

    def warehouse_of(self, r: int) -> int:
        """Seven in ten retailers are the hub's; the rest are spread over the regional warehouses."""
        return int(self.warehouses_of(np.array([r]))[0])

    def warehouses_of(self, r: np.ndarray) -> np.ndarray:
        """``warehouse_of`` for an array of retailers."""
        return np.where(r % 10 < 7, 0, 1 + (r // 10 * 3 + r % 10 - 7) % (self.warehouses - 1))

    def served(self, demand: np.ndarray) -> np.ndarray:
        """Per warehouse, the daily demand of the retailers it stocks."""
        return np.bincount(self.warehouses_of(np.arange(self.retailers)), demand, self.warehouses)

    def products_at(self, w: int) -> list[int]:
        """The products a warehouse (and so each of its retailers) can get."""
        return np.flatnonzero(self.carried[w]).tolist()

    @cached_property
    def carried(self) -> np.ndarray:
        """(warehouse, product): whether the warehouse gets the product, from the factories that ship to it."""
        carried = np.zeros((self.warehouses, len(PRODUCTS)), dtype=bool)
        for f in range(self.factories):
            carried[np.ix_(self.factory_warehouses(f), self.makes(f))] = True
        return carried

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
    """``size`` sites (at least 32) with ``days`` of daily inventory and flow; returns what was made.

    Sites are made ``CHUNK`` at a time, each with its relations and tensors, so memory stays bounded at any size;
    after each step ``progress`` is told how many more sites are done. Its increments add up to ``size`` exactly
    (below 32, where 32 sites are made, in proportion).
    """
    rng = np.random.default_rng(seed)
    plan = Plan.of(size, days)
    step = _Steps(session, progress, size, plan.sites)
    _prepare(session)
    demand = rng.integers(60, 141, plan.retailers)  # units a day per retailer
    served = plan.served(demand)
    # Upstream first: a relation needs both ends, and a trigger that follows ships_to from a stock the relation.
    factories = _sites(session, "factory", range(plan.factories), rng)
    warehouses = _sites(session, "warehouse", range(plan.warehouses), rng)
    step.relate(_upstream(plan, factories, warehouses, served[0], rng))
    _factory_flows(step, plan, factories, rng)
    _warehouse_stocks(step, plan, warehouses, served, rng)
    _suppliers(step, plan, factories, rng)
    _retailers(step, plan, warehouses, demand, rng)
    counts = {"suppliers": plan.suppliers, "factories": plan.factories, "warehouses": plan.warehouses}
    return {"products": len(PRODUCTS), **counts, "retailers": plan.retailers} | {
        "relations": step.relations,
        "values": step.values,
    }


def _factory_flows(step: _Steps, plan: Plan, factories: list[uuid.UUID], rng: np.random.Generator) -> None:
    for chunk in _chunks(plan.factories):
        makes = np.zeros((len(chunk), len(PRODUCTS)), dtype=bool)
        for i, f in enumerate(chunk):
            makes[i, plan.makes(f)] = True
        flows = _flows(rng, plan.days, makes, 400.0 * makes.sum(axis=1))
        step.write([(factories[f], "flow", flows[i]) for i, f in enumerate(chunk)], len(chunk))


def _warehouse_stocks(
    step: _Steps, plan: Plan, warehouses: list[uuid.UUID], served: np.ndarray, rng: np.random.Generator
) -> None:
    """Inventory and flow of each warehouse, about what its retailers sell; the hub's day of shrinkage."""
    for chunk in _chunks(plan.warehouses):
        carried, demand = plan.carried[chunk.start : chunk.stop], served[chunk.start : chunk.stop]
        stocks = _stocks(rng, plan.days, carried, 8 * demand / np.maximum(1, carried.sum(axis=1)))
        flows = _flows(rng, plan.days, carried, demand)
        w, product, day = plan.shrinkage
        if w in chunk:
            stocks[w - chunk.start, product, 0, day] = LOW_STOCK // 2  # back to normal the next day
        pairs = (("inventory", stocks), ("flow", flows))
        step.write([(warehouses[w], name, a[i]) for i, w in enumerate(chunk) for name, a in pairs], len(chunk))


def _suppliers(step: _Steps, plan: Plan, factories: list[uuid.UUID], rng: np.random.Generator) -> None:
    for chunk in _chunks(plan.suppliers):
        suppliers = _sites(step.session, "supplier", chunk, rng)
        step.relate(_supplies(plan, chunk, suppliers, factories, rng))
        step.done(len(chunk))


def _retailers(
    step: _Steps, plan: Plan, warehouses: list[uuid.UUID], demand: np.ndarray, rng: np.random.Generator
) -> None:
    """Each retailer, the relation from its warehouse, and its inventory; the planted run-downs."""
    declining = dict(plan.declining())
    for chunk in _chunks(plan.retailers):
        retailers = _sites(step.session, "retailer", chunk, rng)
        warehouse = plan.warehouses_of(np.arange(chunk.start, chunk.stop))
        step.relate(
            _edge(rng, "ships_to", warehouses[w], retailer, float(demand[r]), int(rng.integers(1, 4)))
            for r, w, retailer in zip(chunk, warehouse.tolist(), retailers, strict=True)
        )
        stocks = _stocks(rng, plan.days, plan.carried[warehouse], 3 * demand[chunk.start : chunk.stop] / 4)
        for r in (r for r in chunk if r in declining):
            stocks[r - chunk.start, declining[r], 0] = _run_down(rng, stocks[r - chunk.start, declining[r], 0])
        step.write([(retailer, "inventory", stocks[i]) for i, retailer in enumerate(retailers)], len(chunk))


def _prepare(session: Session) -> None:
    """The schemas, kinds, rules and products: what every site refers to."""
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


class _Steps:
    """Writes relations and tensors in bulk, counts them, and tells ``progress`` the sites done, scaled so that
    the increments add up to ``size`` when more sites than that are made."""

    def __init__(self, session: Session, progress: Callable[[int], None] | None, size: int, sites: int) -> None:
        self.session, self.progress, self.size, self.sites = session, progress, size, sites
        self.origin = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        self.relations = self.values = self.sites_done = self.told = 0

    def relate(self, items: Iterable[RelationCreate]) -> None:
        self.relations += len(relations.create_many(self.session, list(items)))

    def write(self, arrays: list[tuple[uuid.UUID, str, np.ndarray]], sites: int) -> None:
        """Tensors of entities, each from its (product, measure, day) array; ``sites`` are then done."""
        days = arrays[0][2].shape[-1]
        created = tensors.create_many(
            self.session,
            [
                TensorCreate(entity_id=e, schema_name=name, origin=self.origin - timedelta(days=days))
                for e, name, _ in arrays
            ],
        )
        written = tensors.write_arrays(self.session, {t.id: a for t, (_, _, a) in zip(created, arrays, strict=True)})
        self.values += sum(written.values())
        self.done(sites)

    def done(self, sites: int) -> None:
        self.sites_done += sites
        now = self.sites_done * self.size // self.sites
        if self.progress is not None and now > self.told:
            self.progress(now - self.told)
            self.told = now


def _chunks(count: int) -> Iterator[range]:
    return (range(first, min(first + CHUNK, count)) for first in range(0, count, CHUNK))


def _sites(session: Session, kind: str, indices: range, rng: np.random.Generator) -> list[uuid.UUID]:
    """Site entities ``indices`` of a kind; external ids are ``<kind>-<n>`` from 1, the hub's attributes say so."""
    cities = rng.integers(len(_CITIES), size=len(indices)).tolist()
    items = [
        EntityCreate(
            kind=kind,
            name=f"{kind.title()} {i + 1} {_CITIES[city]}",
            external_id=f"{kind}-{i + 1}",
            attributes={"hub": True} if kind == "warehouse" and i == 0 else {},
        )
        for i, city in zip(indices, cities, strict=True)
    ]
    return [entity.id for entity in entities.create_many(session, items)]


def _edge(
    rng: np.random.Generator,
    type_: str,
    source: uuid.UUID,
    target: uuid.UUID,
    capacity: float,
    lead: int,
    **more: object,
) -> RelationCreate:
    """A relation with its lead time and capacity; the weight, the usual daily flow, is 50-90 % of capacity."""
    weight = round(capacity * float(rng.uniform(0.5, 0.9)), 1)
    attributes = {"lead_time_days": lead, "capacity": round(capacity, 1), **more}
    return RelationCreate(source_id=source, target_id=target, type=type_, weight=weight, attributes=attributes)


def _upstream(
    plan: Plan, factories: list[uuid.UUID], warehouses: list[uuid.UUID], hub_demand: float, rng: np.random.Generator
) -> Iterator[RelationCreate]:
    """Factories ``ships_to`` warehouses: the hub's inbound capacity is HUB_SHARE of its retailers' demand.

    A warehouse's lead time is the same from every factory (where it is, not who ships), so that routes through
    the factories tie and none of them outranks the hub even with only two or three factories."""
    lead = rng.integers(2, 8, plan.warehouses).tolist()
    for f in range(plan.factories):
        for w in plan.factory_warehouses(f):
            capacity = HUB_SHARE * float(hub_demand) / (plan.factories - 1) if w == 0 else 3000.0
            yield _edge(rng, "ships_to", factories[f], warehouses[w], capacity, lead[w])


def _supplies(
    plan: Plan, chunk: range, suppliers: list[uuid.UUID], factories: list[uuid.UUID], rng: np.random.Generator
) -> Iterator[RelationCreate]:
    """Suppliers ``chunk`` ``supplies`` the factories that make their products, naming the products sent; a
    supplier's lead time is the same to each of its factories (see ``_upstream``)."""
    for s, supplier, lead in zip(chunk, suppliers, rng.integers(5, 21, len(chunk)).tolist(), strict=True):
        by_factory: dict[int, list[str]] = {}
        for p in plan.supplier_products(s):
            by_factory.setdefault(plan.factory_for(s, p), []).append(PRODUCTS[p])
        for f, skus in by_factory.items():
            yield _edge(rng, "supplies", supplier, factories[f], 2000.0, lead, products=skus)


def _stocks(rng: np.random.Generator, days: int, carried: np.ndarray, level: np.ndarray) -> np.ndarray:
    """(site, product, measure, day) for sites carrying ``carried`` (site, product): restocked daily around each
    site's ``level`` (well above LOW_STOCK); NaN where not carried."""
    base = np.maximum(4 * LOW_STOCK, level[:, None] * rng.uniform(0.7, 1.3, carried.shape))
    values = np.maximum(3 * LOW_STOCK, base[..., None] + rng.normal(0.0, 0.08 * base[..., None], (*base.shape, days)))
    values[~carried] = np.nan
    return np.round(values)[:, :, None, :]


def _run_down(rng: np.random.Generator, series: np.ndarray) -> np.ndarray:
    """The last 30 days fall steadily to a few units: replenishment stopped, sales went on."""
    out = series.copy()
    start = max(0, len(series) - 30)
    steps = len(series) - start
    out[start:] = np.linspace(series[start], float(rng.integers(2, 8)), steps) + rng.normal(0, 1.5, steps)
    return np.round(np.maximum(out, 0))


def _flows(rng: np.random.Generator, days: int, products: np.ndarray, volume: np.ndarray) -> np.ndarray:
    """(site, product, direction, day): what came in and went out of sites handling ``products`` (site, product),
    about each site's ``volume`` a day over its products; NaN for the others."""
    shape = (*products.shape, days)
    out = (volume / np.maximum(1, products.sum(axis=1)))[:, None, None] * rng.uniform(0.8, 1.2, shape)
    values = np.stack([out * rng.uniform(0.9, 1.1, shape), out], axis=2)
    values[~products] = np.nan
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
  - Anomalies: `on_hand` of every inventory is scored (GET /api/v1/anomalies/rules; detector mad over 30
    days) from the demo's end on: stock written from now on is scored as it comes, after ten days of each
    series; POST /api/v1/anomalies/scan {"schema": "inventory", "label": "on_hand"} scores the generated
    history (the run-downs and the hub's shrinkage) on demand.
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
    anomalies="supply_chain_anomalies.json",
    tour=TOUR,
)
