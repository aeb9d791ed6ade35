"""Importers of real data: source rows mapped onto engine calls (``health`` holds the healthcare mapping that the
Synthea CSV importer and a FHIR importer share; ``synthea`` reads a Synthea CSV export)."""
