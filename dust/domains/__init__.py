"""Domain packs: schemas, entity kinds, relation types and generated demo data for one field."""
